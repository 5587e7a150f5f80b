# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
# One labhop's session with the server: while this script's stdin stays open, `ls` shows the
# server as attached (to $client), and the browser token $token (file name $token_name, see
# remote/server_config.py) opens it. EOF, or the end of this process, ends both.
main() {
    state=$(state_root)/$name
    [ -d "$state" ] || { out gone 1; exit 0; }
    mkdir -m 700 "$state/owners" "$state/tokens" 2>/dev/null
    # shellcheck disable=SC2015  # fail when either is not private
    private_dir "$state/owners" && private_dir "$state/tokens" \
        || fail "$exit_state_unusable" "$state/owners is not a private directory on $fail_host"
    # Gone sessions' records and tokens go first (owner_clients removes them).
    owner_clients "$state" || :
    # This labhop's session from before a network drop may still be here; it is replaced.
    # Another labhop's session is never touched.
    end_session "$state" "$session"
    me="$$ $(proc_start $$)"
    record=$state/owners/$session
    # The server takes browser tokens once its private config says so (server_config.py).
    tokens=0
    [ -f "$state/auth" ] && tokens=1
    if [ "$tokens" = 1 ] && [ -n "$token_name" ]; then
        # Whole or not at all, as the server reads it on every request: a file of its own,
        # renamed into place.
        { printf '%s' "$token" > "$state/tokens/.$token_name.$$" \
            && mv -f "$state/tokens/.$token_name.$$" "$state/tokens/$token_name"; } \
            || fail "$exit_state_unusable" "cannot write in $state/tokens on $fail_host"
    else
        token_name=''
    fi
    printf '%s\n%s\n' "$me" "$token_name" > "$record"
    save "$record.client" "$client"
    out tokens "$tokens"
    out held "$session"
    # Held open by the labhop that owns the server: EOF means it has gone. `read` is a
    # builtin, so this session is one process, and ending it (end_session) ends it all.
    while IFS= read -r _line; do :; done
    read_session "$record"
    [ "$sess_pid $sess_start" = "$me" ] && drop_session "$record" "$state"
}

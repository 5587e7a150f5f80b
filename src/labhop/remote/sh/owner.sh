# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
main() {
    state=$(state_root)/$name
    [ -d "$state" ] || exit 0
    # The session this one replaces (a reconnect after a network drop) is still here.
    end_owner "$state"
    me="$$ $(proc_start $$)"
    printf '%s\n' "$me" > "$state/owner"
    save "$state/owner-client" "$client"
    out owner "$$"
    # Held open by the labhop that owns the server: EOF means it has gone. `read` is a
    # builtin, so this session is one process, and ending it (end_owner) ends it all.
    while IFS= read -r _line; do :; done
    [ "$(read_file "$state/owner")" = "$me" ] && rm -f "$state/owner" "$state/owner-client"
}

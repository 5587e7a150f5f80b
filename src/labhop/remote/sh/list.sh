# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
describe() {
    state=$1; entry=${state##*/}
    pid=$(read_file "$state/pid"); id=$(read_file "$state/id")
    kind=$(entry_kind "$state")
    # A backend this labhop does not know (a newer labhop's): neither shown nor cleaned.
    known_kind "$kind" || return 0
    if ! "alive_$kind" "$state"; then
        # Died, culled for idleness, or the host rebooted: never show it as running.
        if [ -s "$state/pid" ] || [ ! -f "$state/id" ]; then
            drop_rundir "$state" "$id"
            rm -rf "$state"
            out cleaned "$entry"
        fi
        return 0
    fi
    # One block per server: a value (escaped, see out) can neither end it nor open another.
    out begin "$entry"
    out kind "$kind"
    out pid "$pid"
    out_file endpoint "$state/endpoint"
    out node "$(read_file "$state/node")"
    out_file root "$state/root"
    if live_owner "$state" >/dev/null; then
        out_file owner "$state/owner-client"
    else
        out owner ""
    fi
    "describe_$kind" "$state"
    [ "$with_token" = 1 ] && out token "$(read_file "$state/token")"
    out record "$(head -n 1 "$state/launch.json" 2>/dev/null)"
    out end "$entry"
}
main() {
    root=$(state_root)
    [ -d "$root" ] || exit 0
    for state in "$root"/*; do
        [ -d "$state" ] || continue
        if [ -n "$name" ] && [ "${state##*/}" != "$name" ]; then continue; fi
        describe "$state"
    done
}

# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
main() {
    state=$(state_root)/$name
    [ -f "$state/log" ] || { out known 0; exit 0; }
    if [ "$follow" = 1 ]; then
        tail -n "$lines" -f "$state/log" &
        t=$!
        # labhop holds stdin open while it follows; EOF (labhop gone) ends the tail too.
        while IFS= read -r _line; do :; done
        kill "$t" 2>/dev/null
    else
        log_begin
        tail -n "$lines" "$state/log"
    fi
}

# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
# The status script of both backends: the fields of a server (`status_fields`, from
# host_status.sh or job_status.sh), then its log tail when asked.
main() {
    state=$(state_root)/$name
    [ -d "$state" ] || { out known 0; exit 0; }
    out known 1
    status_fields
    if [ "$with_log" = 1 ]; then log_tail "$state/log"; fi
}

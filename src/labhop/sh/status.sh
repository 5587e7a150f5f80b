# shellcheck shell=sh
# The status script of both backends: the fields of a server (`status_fields`, from
# host_status.sh or job_status.sh), then its log tail when asked.
main() {
    state=$(state_root)/$name
    [ -d "$state" ] || { out known 0; exit 0; }
    out known 1
    status_fields
    if [ "$with_log" = 1 ]; then log_tail "$state/log"; fi
}

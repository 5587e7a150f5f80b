# shellcheck shell=sh
main() {
    state=$(state_root)/$name
    [ -d "$state" ] || { out known 0; exit 0; }
    out known 1
    jid=$(read_file "$state/jobid")
    out jobid "$jid"
    out job "$(job_line "$jid")"
    out_file endpoint "$state/endpoint"
    out pid "$(read_file "$state/pid")"
    out node "$(read_file "$state/node")"
    # Why the job's script failed, if it did (its `fail` wrote it there).
    if [ -f "$state/failure" ]; then
        out job_exit "$(head -n 1 "$state/failure")"
        out job_error "$(sed 1d "$state/failure")"
    fi
    if [ "$with_log" = 1 ]; then log_tail "$state/log"; fi
}

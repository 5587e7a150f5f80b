# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
# A server that runs as a Slurm job (see status.sh): its job, where it serves, and why
# its script failed, if it did.
status_fields() {
    jid=$(read_file "$state/jobid")
    out jobid "$jid"
    line=$(job_line "$jid")
    out job "$line"
    # A job that left the queue: how it ended, while Slurm still remembers (MinJobAge).
    [ -n "$line" ] || out job_end "$(squeue -h -t all -j "$jid" -o '%T' 2>/dev/null | head -n 1)"
    out_file endpoint "$state/endpoint"
    out pid "$(read_file "$state/pid")"
    out node "$(read_file "$state/node")"
    # Why the job's script failed, if it did (its `fail` wrote it there).
    if [ -f "$state/failure" ]; then
        out job_exit "$(head -n 1 "$state/failure")"
        out job_error "$(sed 1d "$state/failure")"
    fi
}

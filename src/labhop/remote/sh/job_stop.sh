# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
# Stop a server that runs as a Slurm job: scancel makes Slurm send SIGTERM (Jupyter's
# clean stop), then SIGKILL after KillWait; wait until the job has left the queue.
main() {
    state=$(state_root)/$name
    if [ ! -d "$state" ] || [ "$(entry_kind "$state")" != slurm ]; then out known 0; exit 0; fi
    id=$(read_file "$state/id")
    # Only the launch with this id may be stopped.
    if [ -n "$expect_id" ] && [ "$id" != "$expect_id" ]; then out known 0; exit 0; fi
    out known 1
    jid=$(read_file "$state/jobid")
    if [ -n "$(job_line "$jid")" ]; then
        out was_running 1
        scancel "$jid" 2>/dev/null && out signal scancel
        n=0
        while [ -n "$(job_line "$jid")" ] && [ "$n" -lt 300 ]; do nap; n=$((n + 1)); done
    else
        out was_running 0
    fi
    end_owners "$state"
    # The job removes its runtime dir (with the cookie secret) on its node as it ends;
    # this catches a job killed before it could, where that node shares this /tmp.
    drop_rundir "$state" "$id"
    rm -rf "$state"
    out stopped 1
}

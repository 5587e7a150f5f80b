# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
# Variables set here are read by the other fragments of the same script.
# shellcheck disable=SC2034
# What a server that runs as a Slurm job is (see host_entry.sh for the functions every
# backend has). Only Slurm can say whether it is alive: its PID lives on another node.
#
# Its squeue line (state|reason|node|time left), empty once the job has ended.
job_line() { squeue -h -j "$1" -o '%T|%r|%N|%L|%S' 2>/dev/null | head -n 1; }
# Sets `job` to the job's squeue line, which describe_slurm shows.
alive_slurm() {
    job=$(job_line "$(read_file "$1/jobid")")
    live_job_state "${job%%|*}"
}
where_slurm() { printf 'as Slurm job %s' "$(read_file "$1/jobid")"; }
describe_slurm() {
    out jobid "$(read_file "$1/jobid")"
    out job "$job"
}

# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
# `A && B || fail ...` is meant: fail when either test is false.
# shellcheck disable=SC2015
main() {
    root_state=$(state_root)
    state=$root_state/$name
    [ -d "$state" ] && refuse_other_kind "$state" slurm
    if [ "$(entry_kind "$state")" = slurm ]; then
        if live_job_state "$(job_line "$(read_file "$state/jobid")" | cut -d'|' -f1)"; then
            open_in "$state"
            out existing 1
            out jobid "$(read_file "$state/jobid")"
            out token "$(read_file "$state/token")"
            exit 0
        fi
    fi
    command -v sbatch >/dev/null 2>&1 \
        || fail "$exit_slurm_refused" "sbatch not found on $fail_host: is it a Slurm login node? (load Slurm's module in your login files)"
    open_in ""
    mkdir -p "$root_state" || fail "$exit_state_unusable" "cannot create $root_state on $fail_host"
    chmod 700 "$root_state" "${root_state%/servers}" 2>/dev/null
    rm -rf "$state" && mkdir -m 700 "$state" || fail "$exit_state_unusable" "cannot create $state on $fail_host"
    printf '%s' "$server_id" > "$state/id"
    printf '%s' "$token" > "$state/token"
    printf 'slurm\n' > "$state/backend"
    printf '%s\n' "$record" > "$state/launch.json"
    eval "set -- $slurm_opts"
    jid=$(printf '%s\n' "$job_script" | sbatch --parsable --job-name="labhop-$name" \
            --output="$state/log" --open-mode=append "$@" 2>"$state/sbatch.err") || {
        # sbatch says why first ("invalid partition specified: gpu2"), then a summary.
        msg=$(grep -m 1 'error:' "$state/sbatch.err" | sed 's/^sbatch: error: //')
        [ -n "$msg" ] || msg=$(grep -v '^[[:space:]]*$' "$state/sbatch.err" | tail -n 1)
        rm -rf "$state"
        fail "$exit_slurm_refused" "Slurm refused the job: ${msg:-sbatch failed}"
    }
    jid=${jid%%;*}
    printf '%s\n' "$jid" > "$state/jobid"
    out existing 0
    out jobid "$jid"
    out token "$token"
}

# shellcheck shell=sh
# Fragment of a script that remote.py composes: the values it reads are assigned in the
# script's header (remote._assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
count_kernels() {
    # Kernels are the server's children that carry its id in their environment.
    n=0
    for d in "$proc_dir"/[0-9]*; do
        [ -r "$d/environ" ] || continue
        [ "$(cut -d' ' -f4 "$d/stat" 2>/dev/null)" = "$1" ] || continue
        tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qx "LABHOP_SERVER_ID=$2" && n=$((n + 1))
    done
    printf '%s' "$n"
}
describe() {
    state=$1; entry=${state##*/}
    pid=$(read_file "$state/pid"); id=$(read_file "$state/id")
    job=
    if is_slurm "$state"; then
        job=$(job_line "$(read_file "$state/jobid")")
        alive=$([ -n "$job" ] && echo 1)
    else
        alive=$(is_ours "$pid" "$id" "$state" && echo 1)
    fi
    if [ -z "$alive" ]; then
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
    out pid "$pid"
    out_file endpoint "$state/endpoint"
    out node "$(read_file "$state/node")"
    out_file root "$state/root"
    if live_owner "$state" >/dev/null; then
        out_file owner "$state/owner-client"
    else
        out owner ""
    fi
    if [ -n "$job" ]; then
        out jobid "$(read_file "$state/jobid")"
        out job "$job"
    elif [ "$with_kernels" = 1 ] && [ -r "$proc_dir/self/environ" ]; then
        out kernels "$(count_kernels "$pid" "$id")"
    fi
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

# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
describe() {
    state=$1; entry=${state##*/}
    file_into pid "$state/pid"
    file_into id "$state/id"
    file_into kind "$state/backend"
    kind=${kind:-host}  # entries of labhop 0.1 wrote no backend (see entry_kind)
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
    file_into node "$state/node"
    out node "$node"
    out_file root "$state/root"
    # Every labhop attached to it, one per line (empty: none is).
    owner_clients "$state" || :
    out owner "$oc_clients"
    "describe_$kind" "$state"
    if [ "$with_token" = 1 ]; then file_into token "$state/token"; out token "$token"; fi
    fl_line=
    { IFS= read -r fl_line || :; } < "$state/launch.json" 2>/dev/null
    out record "$fl_line"
    out end "$entry"
}
main() {
    root=$(state_root)
    [ -d "$root" ] || exit 0
    if [ "$with_kernels" = 1 ]; then
        # Every server's kernels in one pass over the process table (see count_kernels).
        # shellcheck disable=SC2034  # read by make_kernel_table (host_entry.sh)
        kernel_parents=
        for state in "$root"/*; do
            file_into kp_pid "$state/pid"
            kernel_parents="$kernel_parents $kp_pid"
        done
        make_kernel_table
    fi
    for state in "$root"/*; do
        [ -d "$state" ] || continue
        if [ -n "$name" ] && [ "${state##*/}" != "$name" ]; then continue; fi
        describe "$state"
    done
}

# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
# What a server on this host is, for the scripts that read every backend's state entries
# (see `entry_alive` in prelude.sh): each backend has its `alive_KIND`, `where_KIND` and
# `describe_KIND`.
alive_host() {
    is_ours "$(read_file "$1/pid")" "$(read_file "$1/id")" "$1"
}
where_host() { printf 'on the host itself, not as a job'; }
# The fields `labhop ls` shows for it beyond every entry's own (list.sh).
describe_host() {
    if [ "$with_kernels" = 1 ] && [ -r "$proc_dir/self/environ" ]; then
        out kernels "$(count_kernels "$(read_file "$1/pid")" "$(read_file "$1/id")")"
    fi
}
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

# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
# What a server on this host is, for the scripts that read every backend's state entries
# (see `entry_alive` in prelude.sh): each backend has its `alive_KIND`, `where_KIND` and
# `describe_KIND`.
alive_host() {
    file_into ah_pid "$1/pid"
    file_into ah_id "$1/id"
    is_ours "$ah_pid" "$ah_id" "$1"
}
where_host() { printf 'on the host itself, not as a job'; }
# The fields `labhop ls` shows for it beyond every entry's own (list.sh).
describe_host() {
    if [ "$with_kernels" = 1 ] && [ -r "$proc_dir/self/environ" ]; then
        file_into dh_pid "$1/pid"
        file_into dh_id "$1/id"
        count_kernels "$dh_pid" "$dh_id"
        out kernels "$kernel_count"
    fi
}
# Kernels are a server's children that carry its id in their environment. One pass over
# the process table serves every server a script describes (`ls` of 20 servers reads it
# once): `kernel_table` gets a "PPID ID" line for each process whose parent is one of the
# pids in $kernel_parents; only those children's environments are read.
kernel_table=
kernel_table_ready=
make_kernel_table() {
    kernel_table=''
    kernel_table_ready=1
    [ -n "${kernel_parents:-}" ] || return 0
    for d in "$proc_dir"/[0-9]*; do
        [ -r "$d/environ" ] || continue
        kt_stat=
        { IFS= read -r kt_stat; } < "$d/stat" 2>/dev/null || continue
        # After the command name (which may hold spaces): state, then the parent's pid.
        set -f
        # shellcheck disable=SC2086  # split into stat's fields on purpose
        set -- ${kt_stat##*) }
        set +f
        case " $kernel_parents " in *" ${2:-none} "*) ;; *) continue ;; esac
        kt_id=$(tr '\0' '\n' < "$d/environ" 2>/dev/null | sed -n 's/^LABHOP_SERVER_ID=//p')
        kernel_table="$kernel_table$2 ${kt_id%%"$nl"*}$nl"
    done
}
count_kernels() {
    if [ -z "$kernel_table_ready" ]; then
        kernel_parents=$1
        make_kernel_table
    fi
    kernel_count=0
    ck_rest=$kernel_table
    while [ -n "$ck_rest" ]; do
        [ "${ck_rest%%"$nl"*}" = "$1 $2" ] && kernel_count=$((kernel_count + 1))
        ck_rest=${ck_rest#*"$nl"}
    done
}

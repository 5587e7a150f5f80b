# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
# Variables set here are read by the other fragments of the same script.
# shellcheck disable=SC2034
# `A && B || fail ...` is meant: fail when either test is false.
# shellcheck disable=SC2015
main() {
    # On a compute node no one typed a name: failures name the node itself.
    fail_host=$(hostname)
    state=$(state_root)/$name
    [ -d "$state" ] || fail "$exit_state_unusable" "labhop state $state is missing on $fail_host; is the home directory shared with the login node?"
    # The login node reads why the job failed from here, never from the log (see job status).
    fail_file=$state/failure
    # On the compute node Jupyter binds to the node's own address so the login node can
    # reach it; the token (read from the 0600 state file) is its only guard there.
    addr=$(hostname)
    # Debian-style /etc/hosts maps the host name to 127.0.1.1, which the login node
    # cannot reach: use the node's first real address then.
    case $(getent hosts "$addr" 2>/dev/null | awk '{ print $1; exit }') in
        127.0.1.1)
            real=$(hostname -I 2>/dev/null | awk '{ print $1 }')
            [ -n "$real" ] && addr=$real ;;
    esac
    prepare_jupyter
    private_config "$state"
    with_jupyter_command tcp "$addr" run_job
}
# Run Jupyter ("$@", see with_jupyter_command) as this job's child until it ends.
run_job() {
    rundir=$(run_base) || fail "$exit_state_unusable" "cannot create a private directory under $run_root on $fail_host"
    save "$state/rundir" "$rundir"
    JUPYTER_TOKEN=$(read_file "$state/token") LABHOP_SERVER_ID=$server_id
    JUPYTER_RUNTIME_DIR=$rundir/$server_id.rt
    export JUPYTER_TOKEN LABHOP_SERVER_ID JUPYTER_RUNTIME_DIR
    save "$state/root" "$root"
    hostname > "$state/node"
    cd "$root" || fail "$exit_root_dir_missing" "cannot enter $root on $fail_host"
    # Jupyter runs as this shell's child, not in its place, so that the shell can remove
    # its runtime dir (cookie secret, connection files) from this node's /tmp once it
    # ends: `labhop stop` runs on the login node and cannot reach it. Slurm's SIGTERM
    # (scancel, walltime) goes to every process of the job; the trap passes it on too.
    jpid=
    trap 'if [ -n "$jpid" ]; then kill -TERM "$jpid" 2>/dev/null; else exit 143; fi' TERM INT HUP
    "$@" </dev/null &
    jpid=$!
    proc_start "$jpid" > "$state/start"
    printf '%s\n' "$jpid" > "$state/pid"
    # The endpoint goes to the login node only once the port Jupyter chose is known to be
    # its alone: no request with the token ever goes to a port it does not hold.
    jp_rc=0; await_own_port "$jpid" "$JUPYTER_RUNTIME_DIR" "$port_wait" || jp_rc=$?
    case $jp_rc in
        0) printf '%s\n' "$endpoint$tcp_port" > "$state/endpoint" ;;
        1) ;;  # it died: the wait below ends at once, and the job with it
        2) end_jupyter
           fail "$exit_state_unusable" "another process also listens on port $tcp_port, which Jupyter chose on $fail_host; labhop stopped the server; retry" ;;
        *) end_jupyter
           fail "$exit_start_timeout" "jupyter-$app did not listen within $port_wait s on $fail_host; labhop stopped it (raise --timeout if the node is slow)" ;;
    esac
    while :; do
        rc=0; wait "$jpid" || rc=$?
        # A trapped signal cuts wait short (status > 128) while Jupyter is still stopping.
        [ "$rc" -gt 128 ] && kill -0 "$jpid" 2>/dev/null || break
    done
    rm -rf "$JUPYTER_RUNTIME_DIR"
    [ "$rundir" = "$run_root/labhop-$(id -u)" ] || rmdir "$rundir" 2>/dev/null
    exit "$rc"
}
# Stop the job's Jupyter before the job fails, and remove what it left on this node.
end_jupyter() {
    kill -TERM "$jpid" 2>/dev/null
    wait "$jpid" 2>/dev/null
    rm -rf "$JUPYTER_RUNTIME_DIR"
    [ "$rundir" = "$run_root/labhop-$(id -u)" ] || rmdir "$rundir" 2>/dev/null
}

# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
# Variables set here are read by the other fragments of the same script.
# shellcheck disable=SC2034
# `A && B || fail ...` is meant: fail when either test is false.
# shellcheck disable=SC2015
main() {
    root_state=$(state_root)
    state=$root_state/$name
    [ -d "$state" ] && refuse_other_kind "$state" host
    if [ -f "$state/pid" ] && alive_host "$state"; then
        open_in "$state"
        out existing 1
        report "$state"
        exit 0
    fi
    open_in ""
    mkdir -p "$root_state" || fail "$exit_state_unusable" "cannot create $root_state on $fail_host"
    chmod 700 "$root_state" "${root_state%/servers}" 2>/dev/null
    rm -rf "$state" && mkdir -m 700 "$state" || fail "$exit_state_unusable" "cannot create $state on $fail_host"
    cleanup_dir=$state
    printf '%s' "$server_id" > "$state/id"
    printf 'host\n' > "$state/backend"
    prepare_jupyter
    rundir=$(run_base) \
        || fail "$exit_state_unusable" "cannot create a private directory under $run_root on $fail_host"
    [ "$rundir" = "$run_root/labhop-$(id -u)" ] || cleanup_rundir=$rundir
    save "$state/rundir" "$rundir"
    sock=$rundir/$server_id.sock
    [ "$transport" = unix ] && [ "${#sock}" -gt "$max_sock" ] && transport=tcp
    private_config "$state"
    if [ "$transport" = unix ]; then with_jupyter_command unix "$sock" start_server
    else with_jupyter_command tcp 127.0.0.1 start_server; fi
}
# Start Jupyter ("$@", see with_jupyter_command) detached, and report it.
start_server() {
    printf '%s' "$token" > "$state/token"
    # A TCP server's endpoint is written once its port is known to be its own.
    [ "$jupyter_on" = unix ] && printf '%s\n' "$endpoint" > "$state/endpoint"
    save "$state/root" "$root"
    hostname > "$state/node"
    printf '%s\n' "$record" > "$state/launch.json"
    # --gpus counts GPUs as nvidia-smi does (PCI bus order); CUDA's default order differs.
    [ -n "$cuda_visible_devices" ] && export CUDA_VISIBLE_DEVICES="$cuda_visible_devices" CUDA_DEVICE_ORDER=PCI_BUS_ID
    JUPYTER_TOKEN=$token LABHOP_SERVER_ID=$server_id JUPYTER_RUNTIME_DIR=$rundir/$server_id.rt
    export JUPYTER_TOKEN LABHOP_SERVER_ID JUPYTER_RUNTIME_DIR
    cd "$root" || fail "$exit_root_dir_missing" "cannot enter $root on $fail_host"
    if command -v setsid >/dev/null 2>&1; then
        setsid "$@" </dev/null >>"$state/log" 2>&1 &
    else
        nohup "$@" </dev/null >>"$state/log" 2>&1 &
    fi
    pid=$!
    # Our own child, not yet reaped, so the PID is surely it: record when it started
    # (exec keeps that), the proof is_ours needs where /proc cannot tell. Before the pid
    # file, so whoever sees the pid sees its start too.
    proc_start "$pid" > "$state/start"
    printf '%s\n' "$pid" > "$state/pid"
    cleanup_dir='' cleanup_rundir=''
    # Until setsid has exec'd Jupyter, /proc/PID/environ still shows this shell's
    # environment; wait for it so the next step recognises the server as ours.
    n=0
    while ! is_ours "$pid" "$server_id" "$state" && kill -0 "$pid" 2>/dev/null && [ "$n" -lt 25 ]; do
        nap; n=$((n + 1))
    done
    [ "$jupyter_on" = tcp ] && learn_port "$pid"
    out existing 0
    report "$state"
}
# The port TCP server $1 chose, once it listens there alone (await_own_port); the endpoint
# is written only then, so no request with the token ever goes to a port it does not hold.
learn_port() {
    lp_rc=0; await_own_port "$1" "$JUPYTER_RUNTIME_DIR" "$port_wait" || lp_rc=$?
    case $lp_rc in
        0) printf '%s\n' "$endpoint$tcp_port" > "$state/endpoint" ;;
        # Died before it listened: the laptop shows why, from its log.
        1) out exited 1 ;;
        2) kill -TERM "$1" 2>/dev/null
           fail "$exit_state_unusable" "another process also listens on port $tcp_port, which Jupyter chose on $fail_host; labhop stopped the server; retry" ;;
        *) kill -TERM "$1" 2>/dev/null
           fail "$exit_start_timeout" "jupyter-$app did not listen within $port_wait s on $fail_host; labhop stopped it (raise --timeout if the host is slow)" ;;
    esac
}
report() {
    out pid "$(read_file "$1/pid")"
    out_file endpoint "$1/endpoint"
    out node "$(read_file "$1/node")"
    out token "$(read_file "$1/token")"
}

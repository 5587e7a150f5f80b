# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
# Variables set here are read by the other fragments of the same script.
# shellcheck disable=SC2034
# Activate the environment, find Jupyter in it, resolve the root directory, and decide
# the Jupyter flavour and transport. Sets exe_path, root, py, cfg, transport, ws_ping and
# idp (1: the server takes labhop's private config, sh/server_config.py).
prepare_jupyter() {
    activate
    exe_path=$(command -v "jupyter-$app" 2>/dev/null) \
        || fail "$exit_jupyter_not_found" "jupyter-$app not found$env_label on $fail_host; install it there (pip install $pip_name) or pick another --env/--app"
    if [ -n "$env_prefix" ]; then
        case $exe_path in
            "$env_prefix"/*) ;;
            *) fail "$exit_jupyter_not_found" "jupyter-$app is not installed$env_label on $fail_host (the one on PATH, $exe_path, belongs to another environment); install it there: pip install $pip_name" ;;
        esac
    fi
    if [ -n "$root_dir" ]; then remote_path "$root_dir"; root=$resolved; else root=$HOME; fi
    [ -d "$root" ] || fail "$exit_root_dir_missing" "server root $root does not exist on $fail_host; create it or pick another --dir"
    # The x keeps a newline that ends the folder's name (pwd adds one more).
    root=$(cd -- "$root" && pwd -P && printf x) || fail "$exit_root_dir_missing" "cannot enter $root on $fail_host"
    root=${root%x}; root=${root%"$nl"}
    py=$(dirname "$exe_path")/python
    [ -x "$py" ] || py=$(command -v python3 2>/dev/null) || py=
    flavour=
    [ -n "$py" ] && flavour=$("$py" -c "$flavour_py" "$app" "$transport" 2>/dev/null)
    [ -n "$flavour" ] || flavour="ServerApp $transport 0 0"
    # shellcheck disable=SC2086  # split on purpose: flavour.py prints four words
    set -- $flavour; cfg=$1; transport=$2; ws_ping=${3:-0}; idp=${4:-0}
}
# The server's private configuration (state $1): a directory of its own, first in
# JUPYTER_CONFIG_PATH, so the user's ~/.jupyter and the env's files are read as always, after
# it; nothing of theirs is written. Its file gives each labhop session a browser token of its
# own (sh/server_config.py). Servers without jupyter_server 2's IdentityProvider get none.
private_config() {
    [ "$idp" = 1 ] || return 0
    mkdir -m 700 "$1/config" "$1/tokens" 2>/dev/null
    # shellcheck disable=SC2015  # fail when either is not private
    private_dir "$1/config" && private_dir "$1/tokens" \
        || fail "$exit_state_unusable" "cannot create $1/config on $fail_host"
    printf '%s\n' "$server_config_py" > "$1/config/jupyter_server_config.py" \
        || fail "$exit_state_unusable" "cannot write $1/config on $fail_host"
    JUPYTER_CONFIG_PATH=$1/config${JUPYTER_CONFIG_PATH:+:$JUPYTER_CONFIG_PATH}
    export JUPYTER_CONFIG_PATH
}
# The Jupyter command line of both backends (a host's launch.sh, a Slurm job's job.sh):
# $1 is unix (serve on the socket $2) or tcp (listen on the address $2, on a port of the
# server's own choosing: see await_own_port). Sets $endpoint (for tcp, the address and a
# port to learn), then runs the function $3 with the command line as its arguments (a
# function cannot set its caller's "$@").
with_jupyter_command() {
    jupyter_on=$1 jupyter_at=$2 jupyter_then=$3
    set -- "$exe_path" --no-browser
    if [ "$cfg" = NotebookApp ]; then set -- "$@" "--NotebookApp.notebook_dir=$root"
    else set -- "$@" "--ServerApp.root_dir=$root"; fi
    if [ "$jupyter_on" = unix ]; then
        set -- "$@" "--$cfg.sock=$jupyter_at" "--$cfg.sock_mode=0600"
        endpoint=unix:$jupyter_at
    else
        set -- "$@" "--$cfg.ip=$jupyter_at" "--$cfg.port=0" "--$cfg.port_retries=0"
        endpoint=tcp:$jupyter_at:
    fi
    if [ "$idle_timeout" -gt 0 ]; then
        set -- "$@" "--$cfg.shutdown_no_activity_timeout=$idle_timeout" \
            "--MappingKernelManager.cull_idle_timeout=$idle_timeout" \
            "--MappingKernelManager.cull_interval=$cull_interval"
    fi
    # Websocket pings close a browser tab's websocket whose tunnel died without a word, so
    # that it keeps no kernel "connected" past the idle timeout (remote.websocket_ping).
    # Kernel (and terminal) websockets ping as tornado_settings' ws_ping_interval and
    # ws_ping_timeout (milliseconds) say, in every jupyter_server and notebook 6: 2.21
    # still ignores ServerApp.websocket_ping_* there (jupyter_server#1612). Those are
    # only passed when shorter than Jupyter's defaults (30 s, 90 s): the option replaces
    # any tornado_settings of the user's config files (their own -- args still win).
    if [ "$ping_interval" -lt 30 ]; then
        set -- "$@" "--$cfg.tornado_settings={\"ws_ping_interval\": ${ping_interval}000, \"ws_ping_timeout\": ${ping_timeout}000}"
    fi
    # The ServerApp options (seconds; jupyter_server >= 2.13) ping the other websockets
    # (events, collaboration). tornado >= 6.5 caps their timeout at the interval, with a
    # warning Jupyter's own defaults print too; the three intervals are kept for a server
    # that applies them to kernel websockets, whose timeout must exceed the interval.
    if [ "$ws_ping" = 1 ]; then
        set -- "$@" "--ServerApp.websocket_ping_interval=$ping_interval" \
            "--ServerApp.websocket_ping_timeout=$ping_timeout"
    fi
    # The user's --jupyter-args, quoted once (shlex.join) when the script was written.
    eval "set -- \"\$@\" $jupyter_args"
    "$jupyter_then" "$@"
}

# shellcheck shell=sh
# Activate the environment, find Jupyter in it, resolve the root directory, and decide
# the Jupyter flavour and transport; $1 is the address a TCP server would bind to.
# Sets exe_path, root, py, cfg, transport and port.
prepare_jupyter() {
    activate
    exe_path=$(command -v "jupyter-$app" 2>/dev/null) \
        || fail 91 "jupyter-$app not found$env_label on $(hostname); install it there (pip install $pip_name) or pick another --env/--app"
    if [ -n "$env_prefix" ]; then
        case $exe_path in
            "$env_prefix"/*) ;;
            *) fail 91 "jupyter-$app is not installed$env_label on $(hostname) (the one on PATH, $exe_path, belongs to another environment); install it there: pip install $pip_name" ;;
        esac
    fi
    if [ -n "$root_dir" ]; then remote_path "$root_dir"; root=$resolved; else root=$HOME; fi
    [ -d "$root" ] || fail 92 "server root $root does not exist on $(hostname); create it or pick another --dir"
    # The x keeps a newline that ends the folder's name (pwd adds one more).
    root=$(cd -- "$root" && pwd -P && printf x) || fail 92 "cannot enter $root on $(hostname)"
    root=${root%x}; root=${root%"$nl"}
    py=$(dirname "$exe_path")/python
    [ -x "$py" ] || py=$(command -v python3 2>/dev/null) || py=
    flavour=
    [ -n "$py" ] && flavour=$("$py" -c "$flavour_py" "$app" "$transport" "$1" 2>/dev/null)
    [ -n "$flavour" ] || flavour="ServerApp $transport 0"
    set -- $flavour; cfg=$1; transport=$2; port=$3
}

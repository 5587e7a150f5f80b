# shellcheck shell=sh
# Fragment of a script that remote/compose.py composes: the values it reads are assigned in the
# script's header (compose.assign) or by the other fragments (prelude.sh's functions).
# shellcheck disable=SC2154
# Variables set here are read by the other fragments of the same script.
# shellcheck disable=SC2034
# `labhop doctor`: looks, changes nothing. $part says which step this script is:
#   hello   who and where we are (the first step after logging in),
#   check   the login environment, --env and Jupyter in it, setsid, the state directory,
#           and Slurm's commands and partitions,
#   listen  a throwaway listener on a private Unix socket, until stdin ends.
# Whatever it creates (a scratch directory, a file in the state directory, the directories
# above it) it removes again before it exits.

# A fresh private directory under $run_root whose name cannot be guessed.
scratch_dir() {
    d=$(mktemp -d "$run_root/labhop-doctor.XXXXXXXX" 2>/dev/null) || {
        d=$run_root/labhop-doctor.$(od -A n -N 8 -t x1 /dev/urandom 2>/dev/null | tr -d ' \n')
        mkdir -m 700 "$d" 2>/dev/null || return 1
    }
    private_dir "$d" || { rmdir "$d" 2>/dev/null; return 1; }
    printf '%s' "$d"
}
# With a time limit where `timeout` exists: a Slurm controller that does not answer makes
# its commands hang.
limited() {
    if command -v timeout >/dev/null 2>&1; then timeout "$cmd_timeout" "$@"; else "$@"; fi
}
first_line() { grep -v '^[[:space:]]*$' "$1" 2>/dev/null | head -n 1 | tr -d '\r'; }
# Can we create files in the state directory? Creates what is missing of it and one file,
# then removes the file and the directories it had to create.
check_state_dir() {
    root=$(state_root)
    out state "$root"
    base=$root
    while [ ! -d "$base" ]; do
        case $base in /*/*) base=${base%/*} ;; *) base=/; break ;; esac
    done
    if [ "$base" = "$root" ]; then out state_existed 1; else out state_existed 0; fi
    if mkdir -p "$root" 2>"$scratch/state.err"; then
        f=$(mktemp "$root/.doctor.XXXXXXXX" 2>"$scratch/state.err") \
            || { f=$root/.doctor.$$; (set -C; : > "$f") 2>"$scratch/state.err" || f=; }
        if [ -n "$f" ]; then rm -f "$f"; out state_ok 1
        else out state_ok 0; out state_error "$(first_line "$scratch/state.err")"; fi
    else
        out state_ok 0; out state_error "$(first_line "$scratch/state.err")"
    fi
    d=$root
    while [ "$d" != "$base" ] && [ -n "$d" ]; do
        rmdir "$d" 2>/dev/null || break
        d=${d%/*}
    done
}
# The environment and Jupyter, exactly as a launch finds them (prepare_jupyter), in a
# subshell: a `fail` there (no env, no Jupyter) ends only it, and the rest still runs.
check_jupyter() {
    (
        trap - EXIT
        prepare_jupyter
        out exe "$exe_path"
        out prefix "$env_prefix"
        out py "$py"
        out transport "$transport"
        [ -n "$py" ] && "$py" -c "$probe_py" versions 2>/dev/null </dev/null \
            | while IFS= read -r line; do out version "$line"; done
        exit 0
    )
}
check_slurm() {
    for c in sbatch squeue scancel sinfo; do
        out command "$c $(command -v "$c" 2>/dev/null)"
    done
    command -v sinfo >/dev/null 2>&1 || return 0
    # Every partition (hidden ones too), the default marked with `*`, and whether it is up.
    limited sinfo -a -h -o '%P %a' </dev/null >"$scratch/sinfo" 2>"$scratch/sinfo.err"
    out sinfo_rc "$?"
    while IFS= read -r line; do out sinfo "$line"; done < "$scratch/sinfo"
    out sinfo_error "$(first_line "$scratch/sinfo.err")"
}
doctor_check() {
    scratch=$(scratch_dir) || fail "$exit_state_unusable" "cannot create a private directory under $run_root on $fail_host"
    trap 'rm -rf "$scratch"' EXIT
    trap 'exit 1' HUP INT TERM
    state=$scratch
    out shell "${SHELL:-}"
    out path "$PATH"
    out python3 "$(command -v python3 2>/dev/null)"
    out setsid "$(command -v setsid 2>/dev/null)"
    check_state_dir
    [ "$slurm" = 1 ] && check_slurm
    check_jupyter
    exit 0
}
doctor_listen() {
    scratch=$(scratch_dir) || fail "$exit_state_unusable" "cannot create a private directory under $run_root on $fail_host"
    trap 'rm -rf "$scratch"' EXIT
    trap 'exit 1' HUP INT TERM
    out sock "$scratch/s.sock"
    # It prints `labhop:listening=1` once it listens, answers each connection, and ends at
    # EOF on stdin (labhop is done, or gone) or after $listen_s seconds at the latest.
    "$python" -c "$probe_py" listen "$scratch/s.sock" "$listen_s"
    exit 0
}
main() {
    case $part in
        hello) out user "$(id -un)"; out host "$(hostname)"; exit 0 ;;
        check) doctor_check ;;
        listen) doctor_listen ;;
    esac
    fail 1 "unknown doctor step '$part'"
}

"""Builds the POSIX sh scripts labhop runs on the remote, and parses what they print.

Pure functions: text in, text out. Every value that comes from the user is quoted once,
here, with `shlex.quote` and assigned to a shell variable at the top of the script; the
script bodies are constants. Scripts go to the remote on ssh's stdin (see `ssh`), so
the token inside them is never on a command line.

Protocol: a script prints machine-readable lines as `labhop:key=value` (anything else,
such as output of the user's login files, is ignored) and exits with a sentinel code
from `Exit` when it fails for a reason the user can fix. Every value is escaped (`out`
in the prelude: printable ASCII, `%XX` for `%` and every other byte), so a file name, a
log line or a process name can never print a line of its own; the parser decodes, and
refuses a key that its script prints once appearing twice, or one it never prints.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from dataclasses import dataclass, field
from enum import IntEnum

from labhop.errors import ConfigError, RemoteError

APPS = ("lab", "notebook", "server")
ENV_KINDS = ("conda", "mamba", "micromamba", "venv", "module", "cmd")
# Linux sun_path holds 108 bytes with the NUL, macOS 104; stay below both.
MAX_SOCKET_PATH = 100


class Exit(IntEnum):
    """Sentinel exit codes of our scripts (far from sh's 1/2 and 126/127 and ssh's 255)."""

    ENV_NOT_FOUND = 90
    JUPYTER_NOT_FOUND = 91
    ROOT_DIR_MISSING = 92
    STATE_UNUSABLE = 93
    SLURM_REFUSED = 94


@dataclass(frozen=True)
class EnvSpec:
    """An environment to activate before Jupyter starts, as `KIND:VALUE`."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


def parse_env_spec(text: str) -> EnvSpec:
    kind, sep, value = text.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in ENV_KINDS or not value.strip():
        raise ConfigError(
            f"bad --env {text!r}: use conda:NAME, mamba:NAME, micromamba:NAME, venv:PATH, "
            "module:NAME[,NAME], or cmd:'SHELL TEXT'"
        )
    return EnvSpec(kind, value.strip() if kind != "cmd" else value)


@dataclass(frozen=True)
class LaunchRequest:
    """Everything the remote needs to start (or find) one named server."""

    name: str
    server_id: str
    token: str
    app: str = "lab"
    env: EnvSpec | None = None
    root_dir: str = ""
    local_home: str = ""
    transport: str = "unix"
    idle_timeout: int = 0
    jupyter_args: tuple[str, ...] = ()
    record: dict[str, object] = field(default_factory=dict)
    # For the kernels (see gpus.choose); "" leaves the remote's own value alone.
    cuda_visible_devices: str = ""


# What each script prints: see `parse_output`.
# Printed by `fail` in every script.
_FAILURE_KEYS = ("error", "exit")


@dataclass(frozen=True)
class Keys:
    """The `labhop:` keys one script prints: `single` ones at most once each, `lists`
    any number of times; `log` when a raw log tail may follow `labhop:log-begin`."""

    script: str  # for messages: "start script"
    single: frozenset[str]
    lists: frozenset[str] = frozenset()
    log: bool = False


def _keys(script: str, single: str, lists: str = "", *, log: bool = False) -> Keys:
    return Keys(script, frozenset((*single.split(), *_FAILURE_KEYS)),
                frozenset(lists.split()), log)


LAUNCH_KEYS = _keys("start script", "existing pid endpoint node token")
STATUS_KEYS = _keys("status script", "known alive listening", log=True)
STOP_KEYS = _keys("stop script", "known was_running stopped", "signal swept")
LOGS_KEYS = _keys("log script", "known", log=True)
OWNER_KEYS = _keys("owner script", "owner")
SUBMIT_KEYS = _keys("job submission script", "existing jobid token")
# The batch job prints only `fail`'s lines, into its log; it also leaves them in its state
# (`failure`), which is where the job status script reads them from.
JOB_KEYS = _keys("Slurm job script", "")
JOB_STATUS_KEYS = _keys("job status script",
                        "known jobid job endpoint pid node job_exit job_error", log=True)
# `list_script`: outside its entries, and inside one (between `begin=NAME`, `end=NAME`).
LIST_KEYS = _keys("list script", "", "cleaned begin end")
ENTRY_KEYS = frozenset(
    ("pid", "endpoint", "node", "root", "owner", "kernels", "token", "record", "jobid", "job"))


class Script(str):
    """A script's text, carrying the `Keys` of what it prints (see `parse_output`)."""

    keys: Keys

    def __new__(cls, text: str, keys: Keys) -> Script:
        script = super().__new__(cls, text)
        script.keys = keys
        return script


# ---------------------------------------------------------------------------------------
# Shared shell functions. `main` is always a function so sh reads the whole script before
# running any of it: a child that read stdin could otherwise eat the rest of the script.
_PRELUDE = r"""
umask 077
proc_dir=/proc
# Where the node-local run directory lives (see run_base); a test points it elsewhere.
run_root=/tmp
# A cd that used $CDPATH would print where it went, into a $(...) that reads a path.
unset CDPATH
nl='
'
# The protocol (see parse_output): `out KEY VALUE` prints `labhop:KEY=VALUE` on a line of
# its own, VALUE escaped so that it is printable ASCII: every byte outside 0x20..0x7e, and
# `%` itself, becomes %XX (two upper-case hex digits). No value can end its line, so none
# can start a `labhop:` line of its own. Values made only of safe characters skip od/awk.
esc_awk='BEGIN { for (i = 32; i < 127; i++) c[i] = sprintf("%c", i); h = "0123456789ABCDEF" }
{ s = ""
  for (i = 1; i <= NF; i++) {
      b = $i + 0
      if (b >= 32 && b < 127 && b != 37) s = s c[b]
      else s = s "%" substr(h, int(b / 16) + 1, 1) substr(h, b % 16 + 1, 1)
  }
  printf "%s", s }'
out() {
    case ${2-} in
        *[!\ ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./:@,+=-]*)
            printf 'labhop:%s=' "$1"
            printf '%s' "$2" | od -A n -v -t u1 | awk "$esc_awk"
            printf '\n' ;;
        *) printf 'labhop:%s=%s\n' "$1" "${2-}" ;;
    esac
}
# Everything after this line is the raw tail of a log (see parse_output).
log_begin() { printf 'labhop:log-begin\n'; }
fail() {
    code=$1; shift; out error "$*"; out exit "$code"
    # A Slurm job's failure is read from its state by the login node (see job status).
    [ -n "${fail_file:-}" ] && printf '%s\n%s\n' "$code" "$*" > "$fail_file"
    # A launch that fails leaves no half-made state behind (see cleanup_dir in main).
    [ -n "${cleanup_dir:-}" ] && rm -rf "$cleanup_dir"
    [ -n "${cleanup_rundir:-}" ] && rmdir "$cleanup_rundir" 2>/dev/null
    exit "$code"
}
nap() { sleep 0.2 2>/dev/null || sleep 1; }
state_root() { printf '%s/labhop/servers' "${XDG_STATE_HOME:-$HOME/.local/state}"; }
# Values that must come back exactly (a folder's name may end in a newline, which $(...)
# would strip) are saved with one newline added and loaded into $got without it.
save() { printf '%s\n' "$2" > "$1"; }
load() {
    got=
    [ -f "$1" ] || return 1
    got=$(cat "$1" 2>/dev/null; printf x)
    got=${got%x}; got=${got%"$nl"}
}
out_file() { load "$2" || got=; out "$1" "$got"; }
# The numeric owner of $1 (not following a symlink), as `ls -n` shows it.
owner_of() { set -f; set -- $(ls -ldn "$1" 2>/dev/null); set +f; printf '%s' "${3-}"; }
# True when $1 is a directory (not a symlink) that only we can enter: ours, mode 0700,
# no ACL (ls marks one with `+`).
private_dir() {
    [ -d "$1" ] && [ ! -L "$1" ] && [ "$(owner_of "$1")" = "$(id -u)" ] || return 1
    case $(ls -ldn "$1" 2>/dev/null) in "drwx------ "*|"drwx------. "*|"drwx------@ "*) return 0 ;; esac
    return 1
}
# Node-local, private: a socket on a shared home cannot be reached from other nodes, and
# $XDG_RUNTIME_DIR is deleted by logind when the user's last session ends, which would
# take the socket of a server that is meant to outlive this connection with it.
# $run_root/labhop-UID when that is a private directory of ours; when someone else took
# that name first (or it is a symlink, or not private), a fresh directory whose name
# cannot be guessed. Each launch records the one it got (see rundir_of).
run_base() {
    d=$run_root/labhop-$(id -u)
    mkdir -m 700 "$d" 2>/dev/null
    [ -d "$d" ] && [ ! -L "$d" ] && [ "$(owner_of "$d")" = "$(id -u)" ] && chmod 700 "$d" 2>/dev/null
    private_dir "$d" && { printf '%s' "$d"; return 0; }
    d=$(mktemp -d "$run_root/labhop-$(id -u).XXXXXXXX" 2>/dev/null) || {
        d=$run_root/labhop-$(id -u).$(od -A n -N 8 -t x1 /dev/urandom 2>/dev/null | tr -d ' \n')
        mkdir -m 700 "$d" 2>/dev/null || return 1
    }
    private_dir "$d" || return 1
    printf '%s' "$d"
}
# Sets $rundir to the run directory the server of state $1 recorded (launches before
# labhop recorded it used the usual one). Only a directory right under $run_root named
# like ours is believed.
rundir_of() {
    base=$run_root/labhop-$(id -u)
    load "$1/rundir" || got=
    case $got in "$base"|"$base".*) rundir=$got ;; *) rundir=$base ;; esac
    case ${rundir#"$base"} in *"/"*|*"$nl"*) rundir=$base ;; esac
}
# Remove what server $2 (of state $1) left in its run directory: its Jupyter runtime dir
# (cookie secret, connection files), and the directory itself when it was a fallback.
drop_rundir() {
    case $2 in ""|*/*|.|..) return 0 ;; esac
    rundir_of "$1"
    rm -rf "$rundir/$2.rt"
    [ "$rundir" = "$run_root/labhop-$(id -u)" ] || rmdir "$rundir" 2>/dev/null
    return 0
}
# Sets $resolved to path $1 with a leading ~ expanded (a variable, not printed: $(...)
# would strip a newline that ends the name).
expand_path() {
    case $1 in
        "~") resolved=$HOME ;;
        "~/"*) resolved=$HOME/${1#"~/"} ;;
        *) resolved=$1 ;;
    esac
}
# A path typed as ~/x on the laptop arrives expanded with the laptop's home; if that does
# not exist here, read it relative to this home instead. Sets $resolved.
remote_path() {
    expand_path "$1"
    if [ ! -e "$resolved" ] && [ -n "$local_home" ]; then
        case $resolved in
            "$local_home"/*) alt="$HOME/${resolved#"$local_home"/}"; [ -e "$alt" ] && resolved=$alt ;;
        esac
    fi
}
# True when pid $1 is alive and proven to be the server with id $2 whose state directory
# is $3: its environment holds the id or, where that cannot be read (no /proc: macOS,
# BSD), its start time is the one recorded at launch ($3/start). Without proof, no: a
# PID reused by another process must never be signalled.
is_ours() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
    # A killed server whose parent has not reaped it yet is a zombie: dead, not ours.
    if [ -r "$proc_dir/$1/stat" ]; then
        case $(sed 's/.*) //' "$proc_dir/$1/stat" 2>/dev/null) in Z*|X*) return 1 ;; esac
    else
        case $(ps -o stat= -p "$1" 2>/dev/null) in *Z*) return 1 ;; esac
    fi
    if [ -r "$proc_dir/$1/environ" ]; then
        tr '\0' '\n' < "$proc_dir/$1/environ" 2>/dev/null | grep -qx "LABHOP_SERVER_ID=$2"
        return
    fi
    [ -n "${3:-}" ] || return 1
    started=$(read_file "$3/start")
    [ -n "$started" ] && [ "$(proc_start "$1")" = "$started" ]
}
read_file() { [ -f "$1" ] && cat "$1" 2>/dev/null; }
# When process $1 started (clock ticks since boot, or ps's start time without /proc):
# a PID plus its start time names one process, even after the PID is reused.
proc_start() {
    if [ -r "$proc_dir/$1/stat" ]; then
        sed 's/.*) //' "$proc_dir/$1/stat" 2>/dev/null | cut -d' ' -f20
    else
        ps -o lstart= -p "$1" 2>/dev/null | tr -s ' ' '_'
    fi
}
# The owner session recorded in $1/owner ("PID START"), if that process still runs.
live_owner() {
    set -- $(read_file "$1/owner")
    [ -n "${1:-}" ] && [ -n "${2:-}" ] && [ "$(proc_start "$1")" = "$2" ] && printf '%s' "$1"
}
# End the owner session of state $1: after a network drop its sshd never learns that the
# connection died, so it would stay on this host for hours.
end_owner() {
    p=$(live_owner "$1") || return 0
    [ "$p" = "$$" ] || kill -TERM "$p" 2>/dev/null
}
# For a server that runs as a Slurm job: its squeue line (state|reason|node|time left),
# empty once the job has ended.
job_line() { squeue -h -j "$1" -o '%T|%r|%N|%L' 2>/dev/null | head -n 1; }
is_slurm() { [ "$(read_file "$1/backend")" = slurm ]; }
log_tail() { log_begin; tail -n "$log_lines" "$1" 2>/dev/null; }
"""

_ACTIVATE = r"""
find_conda_sh() {
    for root in ${CONDA_EXE:+"$(dirname "$(dirname "$CONDA_EXE")")"} \
            ${MAMBA_ROOT_PREFIX:+"$MAMBA_ROOT_PREFIX"} \
            "$HOME/miniforge3" "$HOME/mambaforge" "$HOME/miniconda3" "$HOME/anaconda3" \
            "$HOME/miniconda" "$HOME/anaconda" "$HOME/.miniforge3" "$HOME/.miniconda3" \
            /opt/conda /opt/miniforge3 /opt/miniconda3 /opt/anaconda3 \
            /usr/local/miniforge3 /usr/local/miniconda3 /usr/local/anaconda3 /usr/share/miniconda; do
        [ -f "$root/etc/profile.d/conda.sh" ] && { printf '%s' "$root/etc/profile.d/conda.sh"; return 0; }
    done
    c=$(command -v conda 2>/dev/null) || return 1
    root=$(dirname "$(dirname "$c")")
    [ -f "$root/etc/profile.d/conda.sh" ] && printf '%s' "$root/etc/profile.d/conda.sh"
}
activate_err() { tail -n 1 "$state/activate.err" 2>/dev/null | tr -d '\r'; }
# The environment's own code (activate scripts, hooks, module files, --env cmd:) runs with
# its stdout on stderr: only this script speaks the `labhop:` protocol on stdout.
activate() {
    : > "$state/activate.err"
    case $env_kind in
        "") env_prefix= ;;
        venv)
            remote_path "$env_value"; p=$resolved
            [ -f "$p/bin/activate" ] || fail 90 "no virtualenv at $p on $(hostname) (bin/activate is missing); create it with python3 -m venv $p"
            VIRTUAL_ENV_DISABLE_PROMPT=1 . "$p/bin/activate" >&2 2>"$state/activate.err" \
                || fail 90 "activating venv $p failed: $(activate_err)"
            env_prefix=$p ;;
        conda|mamba)
            f=$(find_conda_sh) || fail 90 "conda not found on $(hostname): no etc/profile.d/conda.sh under \$CONDA_EXE or the usual install roots (~/miniforge3, ~/miniconda3, ~/anaconda3, /opt/conda)"
            . "$f" >&2 2>"$state/activate.err" || fail 90 "sourcing $f failed: $(activate_err)"
            conda activate "$env_value" >&2 2>"$state/activate.err" \
                || fail 90 "conda environment '$env_value' not found on $(hostname) ($(activate_err)); list them with: conda env list"
            env_prefix=${CONDA_PREFIX:-} ;;
        micromamba)
            mm=${MAMBA_EXE:-$(command -v micromamba 2>/dev/null)}
            [ -n "$mm" ] || { [ -x "$HOME/.local/bin/micromamba" ] && mm=$HOME/.local/bin/micromamba; }
            [ -n "$mm" ] || fail 90 "micromamba not found on $(hostname) (not on the login PATH, no \$MAMBA_EXE)"
            eval "$("$mm" shell hook --shell posix 2>"$state/activate.err")" >&2 \
                || fail 90 "micromamba shell hook failed: $(activate_err)"
            micromamba activate "$env_value" >&2 2>"$state/activate.err" \
                || fail 90 "micromamba environment '$env_value' not found on $(hostname) ($(activate_err))"
            env_prefix=${CONDA_PREFIX:-} ;;
        module)
            if ! command -v module >/dev/null 2>&1; then
                for f in ${MODULESHOME:+"$MODULESHOME/init/sh"} ${LMOD_PKG:+"$LMOD_PKG/init/sh"} \
                        /usr/share/lmod/lmod/init/sh /etc/profile.d/lmod.sh \
                        /usr/share/modules/init/sh /etc/profile.d/modules.sh; do
                    [ -f "$f" ] && . "$f" >/dev/null 2>&1 && break
                done
            fi
            command -v module >/dev/null 2>&1 || fail 90 "the module command is not available on $(hostname) (no Environment Modules or Lmod found)"
            # Split on commas only: with globbing off, module:'*' stays a literal name.
            old_ifs=$IFS; IFS=,; set -f; set -- $env_value; set +f; IFS=$old_ifs
            module load "$@" >&2 2>"$state/activate.err" \
                || fail 90 "module load $* failed on $(hostname): $(activate_err)"
            env_prefix= ;;
        cmd)
            eval "$env_value" >&2 2>"$state/activate.err" \
                || fail 90 "the --env command failed on $(hostname): $(activate_err)"
            env_prefix= ;;
    esac
}
"""

# Decides the Jupyter flavour and whether a Unix socket can serve. `--sock` came with
# jupyter_server 1.9 and classic notebook 6.1; anything older gets loopback TCP.
_FLAVOUR_PY = r"""
import socket, sys
from importlib.metadata import version
def v(name):
    try:
        return tuple(int(x) for x in version(name).split(".")[:2])
    except Exception:
        return None
app, want = sys.argv[1], sys.argv[2]
bind = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
nb, js = v("notebook"), v("jupyter_server")
prefix = "NotebookApp" if app == "notebook" and nb is not None and nb < (7, 0) else "ServerApp"
sock_ok = (nb is None or nb >= (6, 1)) if prefix == "NotebookApp" else (js is None or js >= (1, 9))
transport = want if sock_ok else "tcp"
port = 0
if transport == "tcp":
    s = socket.socket(); s.bind((bind, 0)); port = s.getsockname()[1]; s.close()
print(prefix, transport, port)
"""

_PREPARE = r"""
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
"""

_LAUNCH_BODY = r"""
main() {
    root_state=$(state_root)
    state=$root_state/$name
    if is_slurm "$state" && [ -n "$(job_line "$(read_file "$state/jobid")")" ]; then
        fail 93 "'$name' runs as Slurm job $(read_file "$state/jobid"); use labhop attach for it, or pick another --name"
    fi
    if [ -f "$state/pid" ] && is_ours "$(read_file "$state/pid")" "$(read_file "$state/id")" "$state"; then
        out existing 1
        report "$state"
        exit 0
    fi
    mkdir -p "$root_state" || fail 93 "cannot create $root_state on $(hostname)"
    chmod 700 "$root_state" "${root_state%/servers}" 2>/dev/null
    rm -rf "$state" && mkdir -m 700 "$state" || fail 93 "cannot create $state on $(hostname)"
    cleanup_dir=$state
    printf '%s' "$server_id" > "$state/id"
    prepare_jupyter 127.0.0.1
    rundir=$(run_base) \
        || fail 93 "cannot create a private directory under $run_root on $(hostname)"
    [ "$rundir" = "$run_root/labhop-$(id -u)" ] || cleanup_rundir=$rundir
    save "$state/rundir" "$rundir"
    sock=$rundir/$server_id.sock
    if [ "$transport" = unix ] && [ ${#sock} -gt $max_sock ]; then
        transport=tcp
        port=$("$py" -c "$flavour_py" "$app" tcp 2>/dev/null | cut -d' ' -f3)
    fi
    set -- "$exe_path" --no-browser
    if [ "$cfg" = NotebookApp ]; then set -- "$@" "--NotebookApp.notebook_dir=$root"
    else set -- "$@" "--ServerApp.root_dir=$root"; fi
    if [ "$transport" = unix ]; then
        set -- "$@" "--$cfg.sock=$sock" "--$cfg.sock_mode=0600"
        endpoint=unix:$sock
    else
        set -- "$@" "--$cfg.ip=127.0.0.1" "--$cfg.port=$port" "--$cfg.port_retries=0"
        endpoint=tcp:127.0.0.1:$port
    fi
    if [ "$idle_timeout" -gt 0 ]; then
        set -- "$@" "--$cfg.shutdown_no_activity_timeout=$idle_timeout" \
            "--MappingKernelManager.cull_idle_timeout=$idle_timeout" \
            "--MappingKernelManager.cull_interval=$cull_interval"
    fi
    eval "set -- \"\$@\" $jupyter_args"
    printf '%s' "$token" > "$state/token"
    printf '%s\n' "$endpoint" > "$state/endpoint"
    save "$state/root" "$root"
    hostname > "$state/node"
    printf '%s\n' "$record" > "$state/launch.json"
    # --gpus counts GPUs as nvidia-smi does (PCI bus order); CUDA's default order differs.
    [ -n "$cuda_visible_devices" ] && export CUDA_VISIBLE_DEVICES="$cuda_visible_devices" CUDA_DEVICE_ORDER=PCI_BUS_ID
    JUPYTER_TOKEN=$token LABHOP_SERVER_ID=$server_id JUPYTER_RUNTIME_DIR=$rundir/$server_id.rt
    export JUPYTER_TOKEN LABHOP_SERVER_ID JUPYTER_RUNTIME_DIR
    cd "$root" || fail 92 "cannot enter $root on $(hostname)"
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
    cleanup_dir= cleanup_rundir=
    # Until setsid has exec'd Jupyter, /proc/PID/environ still shows this shell's
    # environment; wait for it so the next step recognises the server as ours.
    n=0
    while ! is_ours "$pid" "$server_id" "$state" && kill -0 "$pid" 2>/dev/null && [ "$n" -lt 25 ]; do
        nap; n=$((n + 1))
    done
    out existing 0
    report "$state"
}
report() {
    out pid "$(read_file "$1/pid")"
    out_file endpoint "$1/endpoint"
    out node "$(read_file "$1/node")"
    out token "$(read_file "$1/token")"
}
"""

_STATUS_BODY = r"""
main() {
    state=$(state_root)/$name
    [ -d "$state" ] || { out known 0; exit 0; }
    out known 1
    pid=$(read_file "$state/pid")
    if is_ours "$pid" "$(read_file "$state/id")" "$state"; then out alive 1; else out alive 0; fi
    load "$state/endpoint" || got=
    case $got in
        unix:*) if [ -S "${got#unix:}" ]; then out listening 1; else out listening 0; fi ;;
    esac
    if [ "$with_log" = 1 ]; then log_tail "$state/log"; fi
}
"""

_STOP_BODY = r"""
sweep() {
    # Kernels and their children carry the server id in their environment; end any
    # that outlived the server (a kernel's own children are not covered by Jupyter).
    for d in "$proc_dir"/[0-9]*; do
        p=${d#"$proc_dir"/}
        [ "$p" = "$$" ] && continue
        [ -r "$d/environ" ] || continue
        tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qx "LABHOP_SERVER_ID=$id" \
            && kill "-$1" "$p" 2>/dev/null && out swept "$p"
    done
}
wait_gone() {
    n=0
    while is_ours "$pid" "$id" "$state"; do
        [ "$n" -ge "$1" ] && return 1
        nap; n=$((n + 1))
    done
    return 0
}
# A Slurm job: scancel makes Slurm send SIGTERM (Jupyter's clean stop), then SIGKILL
# after KillWait; wait until the job has left the queue.
stop_job() {
    out known 1
    jid=$(read_file "$state/jobid")
    if [ -n "$(job_line "$jid")" ]; then
        out was_running 1
        scancel "$jid" 2>/dev/null && out signal scancel
        n=0
        while [ -n "$(job_line "$jid")" ] && [ "$n" -lt 300 ]; do nap; n=$((n + 1)); done
    else
        out was_running 0
    fi
    end_owner "$state"
    # The job removes its runtime dir (with the cookie secret) on its node as it ends;
    # this catches a job killed before it could, where that node shares this /tmp.
    drop_rundir "$state" "$id"
    if [ "$keep_log" = 1 ]; then rm -f "$state/token" "$state/pid" "$state/start"; else rm -rf "$state"; fi
    out stopped 1
    exit 0
}
main() {
    state=$(state_root)/$name
    [ -d "$state" ] || { out known 0; exit 0; }
    id=$(read_file "$state/id")
    if [ -n "$expect_id" ]; then
        # Only the launch with this id may be stopped; it may still be activating.
        [ "$id" = "$expect_id" ] || { out known 0; exit 0; }
        is_slurm "$state" && stop_job
        n=0
        while [ -d "$state" ] && [ ! -s "$state/pid" ] && [ "$n" -lt 150 ]; do nap; n=$((n + 1)); done
        [ -d "$state" ] || { out known 0; exit 0; }
    fi
    is_slurm "$state" && stop_job
    out known 1
    pid=$(read_file "$state/pid")
    if is_ours "$pid" "$id" "$state"; then
        out was_running 1
        # The laptop asked Jupyter to shut down through /api/shutdown already when it
        # could; give that a moment, then SIGTERM (Jupyter's clean path), then SIGKILL.
        if ! wait_gone "$grace_ticks"; then
            kill -TERM "$pid" 2>/dev/null && out signal TERM
            if ! wait_gone "$term_ticks"; then
                kill -KILL "$pid" 2>/dev/null && out signal KILL
                wait_gone 25
            fi
        fi
    else
        out was_running 0
    fi
    if [ -r "$proc_dir/self/environ" ] && [ -n "$id" ]; then
        sweep TERM
        nap
        sweep KILL
    fi
    end_owner "$state"
    # The socket path the launch recorded, never a guess: it may be in a fallback dir.
    load "$state/endpoint" || got=
    case $got in unix:*) rm -f "${got#unix:}" ;; esac
    drop_rundir "$state" "$id"
    if [ "$keep_log" = 1 ]; then
        rm -f "$state/token" "$state/pid" "$state/start"
    else
        rm -rf "$state"
    fi
    out stopped 1
}
"""


_LIST_BODY = r"""
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
"""

_OWNER_BODY = r"""
main() {
    state=$(state_root)/$name
    [ -d "$state" ] || exit 0
    # The session this one replaces (a reconnect after a network drop) is still here.
    end_owner "$state"
    me="$$ $(proc_start $$)"
    printf '%s\n' "$me" > "$state/owner"
    save "$state/owner-client" "$client"
    out owner "$$"
    # Held open by the labhop that owns the server: EOF means it has gone. `read` is a
    # builtin, so this session is one process, and ending it (end_owner) ends it all.
    while IFS= read -r _line; do :; done
    [ "$(read_file "$state/owner")" = "$me" ] && rm -f "$state/owner" "$state/owner-client"
}
"""

_LOGS_BODY = r"""
main() {
    state=$(state_root)/$name
    [ -f "$state/log" ] || { out known 0; exit 0; }
    if [ "$follow" = 1 ]; then
        tail -n "$lines" -f "$state/log" &
        t=$!
        # labhop holds stdin open while it follows; EOF (labhop gone) ends the tail too.
        while IFS= read -r _line; do :; done
        kill "$t" 2>/dev/null
    else
        log_begin
        tail -n "$lines" "$state/log"
    fi
}
"""


def _assign(**values: object) -> str:
    return "".join(f"{key}={shlex.quote(str(value))}\n" for key, value in values.items())


def _script(keys: Keys, assignments: str, *bodies: str) -> Script:
    return Script("\n".join((_PRELUDE, assignments, *bodies, "main\n")), keys)


def _env_label(env: EnvSpec | None) -> str:
    return f" in {env}" if env else " on the login PATH"


def cull_interval(idle_timeout: int) -> int:
    """How often Jupyter checks for idle kernels: often enough to honour short timeouts."""
    return max(5, min(300, idle_timeout // 4))


def launch_script(request: LaunchRequest) -> Script:
    """Start the named server detached, or report the one already running under that name."""
    return _script(LAUNCH_KEYS, _assign(**launch_values(request)), _ACTIVATE, _PREPARE,
                   _LAUNCH_BODY)


def launch_values(request: LaunchRequest) -> dict[str, object]:
    """The shell variables a script that starts Jupyter needs (see _PREPARE)."""
    env = request.env
    return dict(
        name=request.name,
        server_id=request.server_id,
        token=request.token,
        app=request.app,
        pip_name={"lab": "jupyterlab", "notebook": "notebook", "server": "jupyter_server"}[
            request.app
        ],
        env_kind=env.kind if env else "",
        env_value=env.value if env else "",
        env_label=_env_label(env),
        root_dir=request.root_dir,
        local_home=request.local_home,
        transport=request.transport,
        max_sock=MAX_SOCKET_PATH,
        idle_timeout=request.idle_timeout,
        cull_interval=cull_interval(request.idle_timeout),
        jupyter_args=shlex.join(request.jupyter_args),
        record=json.dumps(request.record, sort_keys=True),
        flavour_py=_FLAVOUR_PY,
        cuda_visible_devices=request.cuda_visible_devices,
    )


def status_script(name: str, *, with_log: bool = False, log_lines: int = 30) -> Script:
    """Is the named server alive, is its socket there; optionally its log tail."""
    assignments = _assign(name=name, with_log=int(with_log), log_lines=log_lines)
    return _script(STATUS_KEYS, assignments, _STATUS_BODY)


def stop_script(name: str, *, grace_s: float = 5.0, term_s: float = 10.0,
                keep_log: bool = False, expect_id: str = "") -> Script:
    """Stop the named server (waiting, then SIGTERM, then SIGKILL by PID) and clean up.

    With `expect_id`, stop it only if it is that launch (and wait for its pid file).
    """
    assignments = _assign(
        name=name,
        expect_id=expect_id,
        grace_ticks=int(grace_s / 0.2),
        term_ticks=int(term_s / 0.2),
        keep_log=int(keep_log),
    )
    return _script(STOP_KEYS, assignments, _STOP_BODY)


def list_script(name: str = "", *, with_token: bool = False,
                with_kernels: bool = True) -> Script:
    """Describe every running server (or just `name`); clean entries whose server is gone."""
    assignments = _assign(name=name, with_token=int(with_token), with_kernels=int(with_kernels))
    return _script(LIST_KEYS, assignments, _LIST_BODY)


def owner_script(name: str, client: str) -> Script:
    """Mark the server as attached for as long as this script's stdin stays open."""
    return _script(OWNER_KEYS, _assign(name=name, client=client), _OWNER_BODY)


def logs_script(name: str, *, lines: int = 100, follow: bool = False) -> Script:
    """The log's last `lines` after `labhop:log-begin`; with `follow`, raw, until EOF."""
    return _script(LOGS_KEYS, _assign(name=name, lines=lines, follow=int(follow)), _LOGS_BODY)


# ---------------------------------------------------------------------------------------
# Reading what a script printed.
#
# A line `labhop:KEY=VALUE` is a field; VALUE is printable ASCII in which `%XX` (two hex
# digits) stands for one byte, the bytes spelling UTF-8 text (see `out` in the prelude).
# `labhop:log-begin` ends the fields: the rest is the raw tail of a log. Other lines
# (the user's login files, an environment's activation) are ignored. Each script
# declares the keys it prints (`Keys`); a key printed twice, or one the script does not
# print, means the output is not what the script wrote, so it is refused, never guessed.

_KEY = re.compile(r"[a-z][a-z0-9_-]*")
_ESCAPED = re.compile(r"(?:[\x20-\x24\x26-\x7e]|%[0-9A-Fa-f]{2})*")
_LOG_BEGIN = "log-begin"


def encode_value(text: str) -> str:
    """What `out` in the scripts prints for `text` (for tests and for symmetry)."""
    return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x25 else f"%{b:02X}"
                   for b in text.encode("utf-8", errors="surrogateescape"))


def decode_value(text: str) -> str:
    """A field's value as the script had it. ValueError when it is not in our form."""
    if not _ESCAPED.fullmatch(text):
        raise ValueError(f"not an escaped value: {text[:80]!r}")
    raw = bytearray()
    parts = text.split("%")
    raw += parts[0].encode("ascii")
    for part in parts[1:]:
        raw.append(int(part[:2], 16))
        raw += part[2:].encode("ascii")
    return raw.decode("utf-8", errors="replace")


def _protocol_error(keys: Keys | None, problem: str) -> RemoteError:
    script = keys.script if keys is not None else "remote script"
    return RemoteError(
        f"the remote {script} printed {problem}; that is not what labhop's script writes "
        "(a login file, or a file name, may have printed it), so labhop stops here; run "
        "with --debug to see what the remote shell printed"
    )


def _lines(stdout: str) -> tuple[list[str], str | None]:
    """(the lines before `labhop:log-begin`, the log after it or None without one)."""
    lines = stdout.split("\n")
    for index, line in enumerate(lines):
        if line.removesuffix("\r") == f"labhop:{_LOG_BEGIN}":
            return lines[:index], "\n".join("\n".join(lines[index + 1:]).splitlines())
    return lines, None


def _fields(stdout: str, keys: Keys) -> tuple[list[tuple[str, str]], str]:
    """The decoded (key, value) pairs in order, and the log tail."""
    lines, log = _lines(stdout)
    if log is not None and not keys.log:
        raise _protocol_error(keys, f"'{_LOG_BEGIN}', which it never prints")
    known = keys.single | keys.lists
    pairs = []
    for line in lines:
        if not line.startswith("labhop:"):
            continue
        body = line[len("labhop:"):].removesuffix("\r")
        key, sep, value = body.partition("=")
        if not sep or not _KEY.fullmatch(key):
            raise _protocol_error(keys, f"a malformed line {line[:80]!r}")
        if key not in known:
            raise _protocol_error(keys, f"the key '{key}', which it never prints")
        try:
            pairs.append((key, decode_value(value)))
        except ValueError:
            raise _protocol_error(keys, f"a malformed value for '{key}'") from None
    return pairs, log or ""


@dataclass(frozen=True)
class ScriptOutput:
    """What a script printed: its `labhop:` fields and, after `log-begin`, a log tail.

    `fields` holds the keys a script prints once; `multi` the ones it may repeat (each
    declared in its `Keys`), in order.
    """

    fields: dict[str, str]
    log: str = ""
    multi: dict[str, list[str]] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.fields.get(key, default)


def parse_output(stdout: str, keys: Keys) -> ScriptOutput:
    """The output of the script `keys` describes; RemoteError when a key is repeated that
    the script prints once, or one appears that it never prints."""
    pairs, log = _fields(stdout, keys)
    fields: dict[str, str] = {}
    multi: dict[str, list[str]] = {key: [] for key in keys.lists}
    for key, value in pairs:
        if key in keys.lists:
            multi[key].append(value)
        elif key in fields:
            raise _protocol_error(keys, f"'{key}' twice")
        else:
            fields[key] = value
    return ScriptOutput(fields=fields, log=log, multi=multi)


def parse_failure(stdout: str) -> ScriptOutput:
    """Why a script failed: its `error` and `exit` fields (see `fail`), whichever script
    it was; other fields are not read. RemoteError when either appears twice."""
    fields: dict[str, str] = {}
    lines, _ = _lines(stdout)
    for line in lines:
        key, sep, value = line.removeprefix("labhop:").removesuffix("\r").partition("=")
        if not line.startswith("labhop:") or not sep or key not in _FAILURE_KEYS:
            continue
        if key in fields:
            raise _protocol_error(None, f"'{key}' twice")
        try:
            fields[key] = decode_value(value)
        except ValueError:
            raise _protocol_error(None, f"a malformed value for '{key}'") from None
    return ScriptOutput(fields=fields)


@dataclass(frozen=True)
class ServerEntry:
    """One running server, as `list_script` described it."""

    name: str
    pid: str
    endpoint: str
    node: str
    root: str
    owner: str
    kernels: int | None
    token: str
    record: dict[str, object]
    jobid: str = ""
    job: str = ""  # squeue's "STATE|REASON|NODE|TIME_LEFT" for a Slurm job


def parse_entries(stdout: str) -> tuple[list[ServerEntry], list[str]]:
    """`list_script` output -> (running servers, names of cleaned stale entries).

    Each server is one block from `begin=NAME` to `end=NAME` holding each of its keys at
    most once; anything else (a block inside a block, an unclosed one, a field outside
    one) is refused with a RemoteError.
    """
    keys = dataclasses.replace(LIST_KEYS, single=LIST_KEYS.single | ENTRY_KEYS)
    pairs, _ = _fields(stdout, keys)
    entries: list[ServerEntry] = []
    cleaned: list[str] = []
    block: dict[str, str] | None = None
    for key, value in pairs:
        if key == "begin":
            if block is not None:
                raise _protocol_error(keys, f"'begin' inside the entry of {block['name']!r}")
            block = {"name": value}
        elif key == "end":
            if block is None or value != block["name"]:
                raise _protocol_error(keys, f"'end' for {value!r} outside its entry")
            entries.append(_entry(block))
            block = None
        elif key in ("error", "exit"):
            raise _protocol_error(keys, f"'{key}'")
        elif key == "cleaned":
            if block is not None:
                raise _protocol_error(keys, f"'cleaned' inside the entry of {block['name']!r}")
            cleaned.append(value)
        elif block is None:
            raise _protocol_error(keys, f"'{key}' outside any entry")
        elif key in block:
            raise _protocol_error(keys, f"'{key}' twice for {block['name']!r}")
        else:
            block[key] = value
    if block is not None:
        raise _protocol_error(keys, f"no 'end' for the entry of {block['name']!r}")
    return entries, cleaned


def _entry(block: dict[str, str]) -> ServerEntry:
    try:
        record = json.loads(block.get("record") or "{}")
    except ValueError:
        record = {}
    kernels = block.get("kernels")
    return ServerEntry(
        name=block["name"],
        pid=block.get("pid", ""),
        endpoint=block.get("endpoint", ""),
        node=block.get("node", ""),
        root=block.get("root", ""),
        owner=block.get("owner", ""),
        kernels=int(kernels) if kernels and kernels.isdigit() else None,
        token=block.get("token", ""),
        record=record if isinstance(record, dict) else {},
        jobid=block.get("jobid", ""),
        job=block.get("job", ""),
    )


# ---------------------------------------------------------------------------------------
# Slurm: the server runs as a batch job on a compute node; the login node submits it.
# State lives in the (shared) home as for a host server, plus `backend` and `jobid`.

_JOB_BODY = r"""
main() {
    state=$(state_root)/$name
    [ -d "$state" ] || fail 93 "labhop state $state is missing on $(hostname); is the home directory shared with the login node?"
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
    prepare_jupyter "$addr"
    [ -n "$port" ] && [ "$port" != 0 ] \
        || fail 93 "cannot find a free port on $(hostname) (no python next to jupyter-$app?)"
    set -- "$exe_path" --no-browser
    if [ "$cfg" = NotebookApp ]; then set -- "$@" "--NotebookApp.notebook_dir=$root"
    else set -- "$@" "--ServerApp.root_dir=$root"; fi
    set -- "$@" "--$cfg.ip=$addr" "--$cfg.port=$port" "--$cfg.port_retries=0"
    if [ "$idle_timeout" -gt 0 ]; then
        set -- "$@" "--$cfg.shutdown_no_activity_timeout=$idle_timeout" \
            "--MappingKernelManager.cull_idle_timeout=$idle_timeout" \
            "--MappingKernelManager.cull_interval=$cull_interval"
    fi
    eval "set -- \"\$@\" $jupyter_args"
    rundir=$(run_base) || fail 93 "cannot create a private directory under $run_root on $(hostname)"
    save "$state/rundir" "$rundir"
    JUPYTER_TOKEN=$(read_file "$state/token") LABHOP_SERVER_ID=$server_id
    JUPYTER_RUNTIME_DIR=$rundir/$server_id.rt
    export JUPYTER_TOKEN LABHOP_SERVER_ID JUPYTER_RUNTIME_DIR
    save "$state/root" "$root"
    hostname > "$state/node"
    cd "$root" || fail 92 "cannot enter $root on $(hostname)"
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
    printf '%s\n' "tcp:$addr:$port" > "$state/endpoint"
    while :; do
        rc=0; wait "$jpid" || rc=$?
        # A trapped signal cuts wait short (status > 128) while Jupyter is still stopping.
        [ "$rc" -gt 128 ] && kill -0 "$jpid" 2>/dev/null || break
    done
    rm -rf "$JUPYTER_RUNTIME_DIR"
    [ "$rundir" = "$run_root/labhop-$(id -u)" ] || rmdir "$rundir" 2>/dev/null
    exit "$rc"
}
"""

_SUBMIT_BODY = r"""
main() {
    root_state=$(state_root)
    state=$root_state/$name
    if [ "$(read_file "$state/backend")" = slurm ]; then
        case $(job_line "$(read_file "$state/jobid")" | cut -d'|' -f1) in
            PENDING|CONFIGURING|RUNNING|REQUEUED|RESIZING|SUSPENDED)
                out existing 1
                out jobid "$(read_file "$state/jobid")"
                out token "$(read_file "$state/token")"
                exit 0 ;;
        esac
    fi
    if ! is_slurm "$state" && [ -f "$state/pid" ] \
            && is_ours "$(read_file "$state/pid")" "$(read_file "$state/id")" "$state"; then
        fail 93 "'$name' already runs on $(hostname) itself, not as a job; use labhop attach for it, or pick another --name"
    fi
    command -v sbatch >/dev/null 2>&1 \
        || fail 94 "sbatch not found on $(hostname): is it a Slurm login node? (load Slurm's module in your login files)"
    mkdir -p "$root_state" || fail 93 "cannot create $root_state on $(hostname)"
    chmod 700 "$root_state" "${root_state%/servers}" 2>/dev/null
    rm -rf "$state" && mkdir -m 700 "$state" || fail 93 "cannot create $state on $(hostname)"
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
        fail 94 "Slurm refused the job: ${msg:-sbatch failed}"
    }
    jid=${jid%%;*}
    printf '%s\n' "$jid" > "$state/jobid"
    out existing 0
    out jobid "$jid"
    out token "$token"
}
"""

_JOB_STATUS_BODY = r"""
main() {
    state=$(state_root)/$name
    [ -d "$state" ] || { out known 0; exit 0; }
    out known 1
    jid=$(read_file "$state/jobid")
    out jobid "$jid"
    out job "$(job_line "$jid")"
    out_file endpoint "$state/endpoint"
    out pid "$(read_file "$state/pid")"
    out node "$(read_file "$state/node")"
    # Why the job's script failed, if it did (its `fail` wrote it there).
    if [ -f "$state/failure" ]; then
        out job_exit "$(head -n 1 "$state/failure")"
        out job_error "$(sed 1d "$state/failure")"
    fi
    if [ "$with_log" = 1 ]; then log_tail "$state/log"; fi
}
"""


def slurm_job_script(request: LaunchRequest) -> Script:
    """The batch script: activate, then exec Jupyter on the node's address."""
    values = launch_values(request)
    values["token"] = ""  # the job reads it from the 0600 state file, never from its script
    body = _script(JOB_KEYS, _assign(**values), _ACTIVATE, _PREPARE, _JOB_BODY)
    return Script("#!/bin/sh\n" + body, JOB_KEYS)


def slurm_submit_script(request: LaunchRequest, sbatch_args: tuple[str, ...]) -> Script:
    """Submit the job from the login node, or report the job already serving this name."""
    assignments = _assign(
        name=request.name,
        server_id=request.server_id,
        token=request.token,
        record=json.dumps(request.record, sort_keys=True),
        slurm_opts=shlex.join(sbatch_args),
        job_script=slurm_job_script(request),
    )
    return _script(SUBMIT_KEYS, assignments, _SUBMIT_BODY)


def slurm_status_script(name: str, *, with_log: bool = False,
                        log_lines: int = 30) -> Script:
    assignments = _assign(name=name, with_log=int(with_log), log_lines=log_lines)
    return _script(JOB_STATUS_KEYS, assignments, _JOB_STATUS_BODY)

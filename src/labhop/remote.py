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
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from importlib import resources

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
    # The PATH to open in the browser, as labhop.opening normalized it; "" for none.
    # Checked before anything starts (open_path.sh); only the launch reads it.
    open_path: str = ""


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


LAUNCH_KEYS = _keys("start script", "existing pid endpoint node token open_path open_kind")
STATUS_KEYS = _keys("status script", "known alive listening", log=True)
STOP_KEYS = _keys("stop script", "known was_running stopped", "signal swept")
LOGS_KEYS = _keys("log script", "known", log=True)
OWNER_KEYS = _keys("owner script", "owner")
SUBMIT_KEYS = _keys("job submission script", "existing jobid token open_path open_kind")
# The batch job prints only `fail`'s lines, into its log; it also leaves them in its state
# (`failure`), which is where the job status script reads them from.
JOB_KEYS = _keys("Slurm job script", "")
JOB_STATUS_KEYS = _keys("job status script",
                        "known jobid job endpoint pid node job_exit job_error", log=True)
# `list_script`: outside its entries, and inside one (between `begin=NAME`, `end=NAME`).
LIST_KEYS = _keys("list script", "", "cleaned begin end")
ENTRY_KEYS = frozenset(
    ("kind", "pid", "endpoint", "node", "root", "owner", "kernels", "token", "record", "jobid",
     "job"))


class Script(str):
    """A script's text, carrying the `Keys` of what it prints (see `parse_output`)."""

    keys: Keys

    def __new__(cls, text: str, keys: Keys) -> Script:
        script = super().__new__(cls, text)
        script.keys = keys
        return script


# ---------------------------------------------------------------------------------------
# The command the remote login shell runs for every script. The script itself comes on
# stdin, so nothing secret or user-supplied is ever an ssh argument (arguments show up in
# `ps` for every user of both machines). It starts a *login* shell so PATH, modules and
# conda are set up as when the user logs in, then hands stdin to a POSIX sh, whatever
# the user's login shell is (csh-family shells do not take `-l -c`, so they get plain sh).
# The login shells that take `-l -c` (see `labhop doctor`, which says which way it went).
LOGIN_SHELLS = ("bash", "zsh", "ksh", "mksh", "dash", "sh", "fish")
REMOTE_LOGIN_BOOTSTRAP = (
    "/bin/sh -c 'case \"${SHELL##*/}\" in"
    f" {'|'.join(LOGIN_SHELLS)}) exec \"$SHELL\" -l -c \"exec /bin/sh -s\";;"
    " *) exec /bin/sh -s;; esac'"
)
REMOTE_PLAIN_BOOTSTRAP = "exec /bin/sh -s"


# ---------------------------------------------------------------------------------------
# The script bodies: POSIX sh files in labhop/sh (checked by `shellcheck -s sh`), read
# once, at import. Each script is the prelude, the assignments of its values, its bodies
# and then `main`: always a function, so sh reads the whole script before running any of
# it (a child that read stdin could otherwise eat the rest of the script).

# Every file of labhop/sh that a script is made of, by name (see tests/unit/test_shell_files).
SHELL_FILES: dict[str, str] = {}


def _text(name: str) -> str:
    text = (resources.files("labhop") / "sh" / name).read_text(encoding="utf-8")
    SHELL_FILES[name] = text
    return text


# Shared shell functions and the `out` protocol, in every script.
_PRELUDE = _text("prelude.sh")
# Activates the --env environment (`activate`).
_ACTIVATE = _text("activate.sh")
# Decides the Jupyter flavour and whether a Unix socket can serve. `--sock` came with
# jupyter_server 1.9 and classic notebook 6.1; anything older gets loopback TCP. Run by
# prepare.sh with the environment's python (a value, `flavour_py`, not a body).
_FLAVOUR_PY = _text("flavour.py")
# Finds Jupyter and its flavour (`prepare_jupyter`); the one Jupyter command line of
# both backends (`with_jupyter_command`, used by launch.sh and job.sh).
_PREPARE = _text("prepare.sh")
_LAUNCH_BODY = _text("launch.sh")
# Checks the PATH to open, and says where it is and whether it is a folder (`open_in`,
# used by launch.sh and submit.sh before they create anything).
_OPEN_PATH = _text("open_path.sh")
# The status script's `main`, shared by a host's server and a Slurm job's: each adds
# its own `status_fields`.
_STATUS_BODY = _text("status.sh")
_HOST_STATUS_FIELDS = _text("host_status.sh")
_STOP_BODY = _text("stop.sh")
_LIST_BODY = _text("list.sh")
# What a state entry of each backend is (`alive_KIND`, `where_KIND`, `describe_KIND`): a
# backend names its own in `Backend.entry_shell`; the scripts that read every backend's
# entries (list, and a launch that must not take another backend's name) get them all as
# `kinds` (see `_kinds`).
HOST_ENTRY_SHELL = _text("host_entry.sh")
JOB_ENTRY_SHELL = _text("job_entry.sh")
_OWNER_BODY = _text("owner.sh")
_LOGS_BODY = _text("logs.sh")
# Slurm (see slurm_job_script).
_JOB_BODY = _text("job.sh")
_SUBMIT_BODY = _text("submit.sh")
_JOB_STOP_BODY = _text("job_stop.sh")
_JOB_STATUS_FIELDS = _text("job_status.sh")
# The GPU query (see gpus_script).
_GPUS_BODY = _text("gpus.sh")
# `labhop doctor`'s steps (see doctor_script), and the Python they run remotely: the
# Jupyter versions, and a throwaway Unix-socket listener.
_DOCTOR_BODY = _text("doctor.sh")
_DOCTOR_PROBE_PY = _text("doctor_probe.py")


def _assign(**values: object) -> str:
    return "".join(f"{key}={shlex.quote(str(value))}\n" for key, value in values.items())


# Where `fail` says a failure happened (`on $fail_host`): the host as the user typed it,
# which only the laptop knows, not the remote's own hostname (an alias `gamer` for a box
# called `vm`). The scripts carry this word and backends.script_failure puts the host in its
# place; a Slurm job's script names its compute node instead (job.sh).
HOST_PLACEHOLDER = "{host}"


def _script(keys: Keys, assignments: str, *bodies: str) -> Script:
    assignments = _assign(fail_host=HOST_PLACEHOLDER) + assignments
    return Script("\n".join((_PRELUDE, assignments, *bodies, "main\n")), keys)


_KIND_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _kinds(kinds: Mapping[str, str]) -> tuple[str, str]:
    """(the `kinds` assignment, every backend's entry functions) for a script that reads
    the state entries of all backends, `kinds` mapping each kind to its entry shell."""
    for kind in kinds:
        if not _KIND_NAME.fullmatch(kind):
            raise ValueError(f"a backend kind must be a shell name, not {kind!r}")
    return _assign(kinds=" ".join(kinds)), "\n".join(kinds.values())


def _env_label(env: EnvSpec | None) -> str:
    return f" in {env}" if env else " on the login PATH"


def cull_interval(idle_timeout: int) -> int:
    """How often Jupyter checks for idle kernels: often enough to honour short timeouts."""
    return max(5, min(300, idle_timeout // 4))


def websocket_ping(idle_timeout: int) -> tuple[int, int]:
    """(interval, timeout) in seconds of Jupyter's websocket pings, by which it closes a
    browser tab's websocket whose tunnel died without a FIN (the laptop changed network,
    slept, lost power): sshd still holds the socket's other end, so only a ping that gets
    no pong tells. Until then the kernel counts as connected, and Jupyter never culls a
    connected kernel (cull_connected=False) nor ends a server that has kernels.

    Jupyter's own pings (30 s, closing after 90 s without a pong, then 5 s for the close
    handshake) find a dead socket within about 2 minutes: fine beside the default 6 h,
    too slow for `--idle-timeout 60`. So the interval is a tenth of the idle timeout,
    between 5 s and Jupyter's 30 s, and the timeout three intervals as Jupyter's: a dead
    socket is gone after at most 4 intervals + 5 s, under half the idle timeout from 50 s
    up (a 30 s idle timeout still waits up to 25 s). Three missed pongs in a row are
    needed, so a slow network or a busy laptop does not drop a live tab, and a dropped
    one only reconnects (JupyterLab does so by itself; the kernel is untouched).
    """
    interval = max(5, min(30, idle_timeout // 10)) if idle_timeout > 0 else 30
    return interval, 3 * interval


def launch_script(request: LaunchRequest, *, kinds: Mapping[str, str]) -> Script:
    """Start the named server detached, or report the one already running under that name
    (refusing the name while another backend's server holds it: `kinds`, see `_kinds`)."""
    kinds_assignment, entry_shell = _kinds(kinds)
    return _script(LAUNCH_KEYS,
                   _assign(**launch_values(request), open_path=request.open_path)
                   + kinds_assignment, entry_shell, _ACTIVATE, _PREPARE, _OPEN_PATH, _LAUNCH_BODY)


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
        ping_interval=websocket_ping(request.idle_timeout)[0],
        ping_timeout=websocket_ping(request.idle_timeout)[1],
        jupyter_args=shlex.join(request.jupyter_args),
        record=json.dumps(request.record, sort_keys=True),
        flavour_py=_FLAVOUR_PY,
        cuda_visible_devices=request.cuda_visible_devices,
    )


def gpus_script(keys: Keys, *, gpu_fields: str, app_fields: str, smi_timeout: int) -> Script:
    """Ask nvidia-smi about GPUs and processes; `keys` and parsing are gpus.py's."""
    assignments = _assign(gpu_fields=gpu_fields, app_fields=app_fields, smi_timeout=smi_timeout)
    return _script(keys, assignments, _GPUS_BODY)


# `labhop doctor`: who and where we are; the login environment, --env, Jupyter, setsid,
# the state directory and Slurm; a throwaway Unix-socket listener (see doctor.sh).
DOCTOR_HELLO_KEYS = _keys("doctor's first step", "user host")
DOCTOR_CHECK_KEYS = _keys(
    "doctor's check script",
    "shell path python3 setsid state state_existed state_ok state_error exe prefix py "
    "transport sinfo_rc sinfo_error",
    "version command sinfo",
)
DOCTOR_LISTEN_KEYS = _keys("doctor's socket listener", "sock listening")
# How long a Slurm command may take, and the listener may live, at most.
DOCTOR_COMMAND_TIMEOUT_S = 15
DOCTOR_LISTEN_S = 60


def doctor_script(part: str, *, env: EnvSpec | None = None, app: str = "lab",
                  slurm: bool = False, python: str = "", local_home: str = "") -> Script:
    """One step of `labhop doctor` (`part`: "hello", "check" or "listen").

    "check" activates `env` and looks for Jupyter with the very values and functions a
    launch uses (launch_values, activate.sh, prepare.sh); "listen" runs `python` as a
    Unix-socket listener until the script's stdin ends.
    """
    keys = {"hello": DOCTOR_HELLO_KEYS, "check": DOCTOR_CHECK_KEYS,
            "listen": DOCTOR_LISTEN_KEYS}[part]
    values: dict[str, object] = {}
    bodies: tuple[str, ...] = ()
    if part == "check":
        # Nothing is started: the name, id and token only fill the launch's shape.
        request = LaunchRequest(name="doctor", server_id="doctor", token="", app=app,
                                env=env, local_home=local_home)
        values = {**launch_values(request), "slurm": int(slurm),
                  "cmd_timeout": DOCTOR_COMMAND_TIMEOUT_S}
        bodies = (_ACTIVATE, _PREPARE)
    elif part == "listen":
        values = {"python": python, "listen_s": DOCTOR_LISTEN_S}
    values = {"part": part, **values, "probe_py": _DOCTOR_PROBE_PY}
    return _script(keys, _assign(**values), *bodies, _DOCTOR_BODY)


def status_script(name: str, *, with_log: bool = False, log_lines: int = 30) -> Script:
    """Is the named server alive, is its socket there; optionally its log tail."""
    assignments = _assign(name=name, with_log=int(with_log), log_lines=log_lines)
    return _script(STATUS_KEYS, assignments, _HOST_STATUS_FIELDS, _STATUS_BODY)


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


def list_script(name: str = "", *, kinds: Mapping[str, str], with_token: bool = False,
                with_kernels: bool = True) -> Script:
    """Describe every running server (or just `name`) of the backends in `kinds` (see
    `_kinds`); clean entries whose server is gone."""
    kinds_assignment, entry_shell = _kinds(kinds)
    assignments = _assign(name=name, with_token=int(with_token), with_kernels=int(with_kernels))
    return _script(LIST_KEYS, assignments + kinds_assignment, entry_shell, _LIST_BODY)


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
    kind: str = ""  # the backend that runs it, as its state entry says ("host", "slurm")


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
        kind=block.get("kind", ""),
    )


# ---------------------------------------------------------------------------------------
# Slurm: the server runs as a batch job on a compute node; the login node submits it.
# State lives in the (shared) home as for a host server, plus `backend` and `jobid`.


def slurm_job_script(request: LaunchRequest) -> Script:
    """The batch script: activate, then exec Jupyter on the node's address."""
    values = launch_values(request)
    values["token"] = ""  # the job reads it from the 0600 state file, never from its script
    body = _script(JOB_KEYS, _assign(**values), _ACTIVATE, _PREPARE, _JOB_BODY)
    return Script("#!/bin/sh\n" + body, JOB_KEYS)


def slurm_submit_script(request: LaunchRequest, sbatch_args: tuple[str, ...], *,
                        kinds: Mapping[str, str]) -> Script:
    """Submit the job from the login node, or report the job already serving this name
    (refusing the name while another backend's server holds it: `kinds`, see `_kinds`)."""
    kinds_assignment, entry_shell = _kinds(kinds)
    assignments = _assign(
        name=request.name,
        server_id=request.server_id,
        token=request.token,
        record=json.dumps(request.record, sort_keys=True),
        slurm_opts=shlex.join(sbatch_args),
        job_script=slurm_job_script(request),
        # The home is shared: the login node checks the PATH to open (open_path.sh).
        root_dir=request.root_dir,
        local_home=request.local_home,
        open_path=request.open_path,
    )
    return _script(SUBMIT_KEYS, assignments + kinds_assignment, entry_shell, _OPEN_PATH,
                   _SUBMIT_BODY)


def slurm_status_script(name: str, *, with_log: bool = False,
                        log_lines: int = 30) -> Script:
    assignments = _assign(name=name, with_log=int(with_log), log_lines=log_lines)
    return _script(JOB_STATUS_KEYS, assignments, JOB_ENTRY_SHELL, _JOB_STATUS_FIELDS,
                   _STATUS_BODY)


def slurm_stop_script(name: str, *, keep_log: bool = False, expect_id: str = "") -> Script:
    """Cancel the named server's job, wait until it has left the queue, and clean up.

    With `expect_id`, only if it is that launch."""
    assignments = _assign(name=name, expect_id=expect_id, keep_log=int(keep_log))
    return _script(STOP_KEYS, assignments, JOB_ENTRY_SHELL, _JOB_STOP_BODY)

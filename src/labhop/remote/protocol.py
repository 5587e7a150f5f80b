"""What the remote scripts print, and how labhop reads it.

A script prints machine-readable lines as `labhop:key=value` (anything else, such as output
of the user's login files, is ignored) and exits with a sentinel code from `Exit` when it
fails for a reason the user can fix. Every value is escaped (`out` in the prelude:
printable ASCII, `%XX` for `%` and every other byte), so a file name, a log line or a
process name can never print a line of its own; the parser decodes, and refuses a key that
its script prints once appearing twice, or one it never prints. Pure: text in, data out.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from enum import IntEnum

from labhop.errors import RemoteError


class Exit(IntEnum):
    """Sentinel exit codes of our scripts (far from sh's 1/2 and 126/127 and ssh's 255)."""

    ENV_NOT_FOUND = 90
    JUPYTER_NOT_FOUND = 91
    ROOT_DIR_MISSING = 92
    STATE_UNUSABLE = 93
    SLURM_REFUSED = 94
    START_TIMEOUT = 95


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


LAUNCH_KEYS = _keys("start script",
                    "existing pid endpoint node token open_path open_kind exited")


STATUS_KEYS = _keys("status script", "known alive listening", log=True)


STOP_KEYS = _keys("stop script", "known was_running stopped", "signal swept")


LOGS_KEYS = _keys("log script", "known", log=True)


OWNER_KEYS = _keys("owner script", "tokens held gone")


SUBMIT_KEYS = _keys("job submission script", "existing jobid token open_path open_kind")


# The batch job prints only `fail`'s lines, into its log; it also leaves them in its state
# (`failure`), which is where the job status script reads them from.
JOB_KEYS = _keys("Slurm job script", "")


JOB_STATUS_KEYS = _keys("job status script",
                        "known jobid job endpoint pid node job_exit job_error job_end", log=True)


# `list_script`: outside its entries, and inside one (between `begin=NAME`, `end=NAME`).
LIST_KEYS = _keys("list script", "", "cleaned begin end")


ENTRY_KEYS = frozenset(
    ("kind", "pid", "endpoint", "node", "root", "owner", "kernels", "token", "record", "jobid",
     "job"))


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


# Where `fail` says a failure happened (`on $fail_host`): the host as the user typed it,
# which only the laptop knows, not the remote's own hostname (an alias `gamer` for a box
# called `vm`). The scripts carry this word and backends.script_failure puts the host in its
# place; a Slurm job's script names its compute node instead (job.sh).
HOST_PLACEHOLDER = "{host}"


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


class ProtocolError(RemoteError):
    """A script's output is not what it writes: refused, never guessed. The script itself
    may have done its work (a launch then has a server to stop)."""


# The line every script prints just before its own output (see compose.script): a random
# marker per run, so that what the user's login files print before it (a banner, or a line
# that looks like labhop's) is never read as the script's.
RUN_MARKER = "labhop:run="


def after_marker(stdout: str, marker: str) -> str:
    """What the script printed after its run marker; all of it when it has none (a script
    built without one), nothing when its marker never came (it failed before)."""
    if not marker:
        return stdout
    line = f"{RUN_MARKER}{marker}"
    lines = stdout.split("\n")
    for index, text in enumerate(lines):
        if text.removesuffix("\r") == line:
            return "\n".join(lines[index + 1:])
    return ""


def _protocol_error(keys: Keys | None, problem: str) -> RemoteError:
    script = keys.script if keys is not None else "remote script"
    return ProtocolError(
        f"the remote {script} printed {problem}; that is not what labhop's script writes "
        "(a login file, or a file name, may have printed it), so labhop stops here; run "
        "with --debug to see what the remote shell printed"
    )


def _lines(stdout: str) -> tuple[list[str], str | None]:
    """(the lines before `labhop:log-begin`, the log after it or None without one)."""
    lines = stdout.split("\n")
    log = None
    for index, line in enumerate(lines):
        if line.removesuffix("\r") == f"labhop:{_LOG_BEGIN}":
            lines, log = lines[:index], "\n".join("\n".join(lines[index + 1:]).splitlines())
            break
    # The run marker is the script's own first line (see after_marker), not a field.
    return [line for line in lines if not line.startswith(RUN_MARKER)], log


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

"""Launch options: the command line, the config file and the built-in defaults resolved
into one set of checked values, each with where it came from.

    resolve("gamer", {"name": Given("proj", "--name")})
    # Options(name="proj", idle_timeout=14400, ...,
    #         sources={"name": Source(--name), "idle_timeout": Source(config [defaults]), ...})

Precedence: typed on the command line > [hosts.HOST] > [defaults] > built-in default.
Every value is checked here, before anything connects. A bad one is one line naming where
it came from and what is allowed, e.g.

    bad --name 'a b': use letters, digits, ...                      (exit 2, CommandLineError)
    bad name = 'a b' ([hosts.gamer] in ~/.config/labhop/config.toml): use letters, ...
                                                                    (exit 3, ConfigError)

No click in here: `cli` says what was typed (`Given`), this module decides the rest.

"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from labhop import debuglog, model
from labhop.config import profiles
from labhop.errors import CommandLineError, ConfigError, LabhopError
from labhop.model import (
    APPS,
    DEFAULT_APP,
    FORWARD_ALLOWED,
    NAME_ALLOWED,
    Forward,
    is_valid_name,
    parse_forward,
)

_LOGGER = debuglog.get(__name__)


COMMAND_LINE = "command line"


CONFIG_FILE = "config file"


BUILT_IN = "built-in"


DURATION_ALLOWED = "use a duration like 90s, 30m, 1h30m, 4h, 2d4h or 0"
WAIT_ALLOWED = "use a duration of at least 1s, like 90s, 2m or 1h30m"
WARNINGS_ALLOWED = "use durations before the end, comma-separated, like 10m,2m (or \"\" for none)"


@dataclass(frozen=True)
class Given:
    """A value typed on the command line, and how it was spelled there ("--name", "NAME")."""

    value: object
    typed: str


@dataclass(frozen=True)
class Source:
    kind: str  # COMMAND_LINE, CONFIG_FILE or BUILT_IN
    key: str  # the config key ("name", "idle_timeout")
    typed: str = ""  # COMMAND_LINE: the option or argument as spelled ("--name", "NAME")
    table: str = ""  # CONFIG_FILE: "hosts.gamer" or "defaults"
    path: Path | None = None  # CONFIG_FILE: the file

    def __str__(self) -> str:
        """'--name', '/home/me/.config/labhop/config.toml [hosts.gamer] name',
        '... [defaults] idle_timeout' or 'built-in default'."""
        if self.kind == COMMAND_LINE:
            return self.typed
        if self.kind == CONFIG_FILE:
            return f"{self.path} [{self.table}] {self.key}"
        return "built-in default"

    def show(self, value: object) -> str:
        """The value as an error line names it: "--name 'a b'", or
        "name = 'a b' ([hosts.gamer] in /home/me/.config/labhop/config.toml)"."""
        if self.kind == COMMAND_LINE:
            return self.typed if isinstance(value, bool) else f"{self.typed} {value!r}"
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        if self.kind == CONFIG_FILE:
            return f"{self.key} = {shown} ([{self.table}] in {self.path})"
        return f"{self.key} = {shown} (built-in default)"

    @property
    def typed_by_user(self) -> bool:
        return self.kind == COMMAND_LINE

    def error(self, message: str) -> LabhopError:
        """Exit 2 for what was typed, exit 3 for what the file says."""
        return CommandLineError(message) if self.typed_by_user else ConfigError(message)


_WHOLE = object()


class _Bad(Exception):
    """A value a check refuses: `str()` is what is allowed ("use ...").

    With `sentence`, the text continues the value's name instead ("cannot take --wrap: ...").
    With `item`, the error names that one item of a list (one --forward) instead of the
    whole value.
    """

    def __init__(self, text: str, *, sentence: bool = False, item: object = _WHOLE) -> None:
        super().__init__(text)
        self.sentence = sentence
        self.item = item


def _after(exc: Exception, prefix: str) -> str:
    """What an error of another module says is allowed, without its own naming of the value."""
    text = str(exc)
    return text[len(prefix):] if text.startswith(prefix) else text


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Bad("use a string")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Bad("use true or false")
    return value


_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# A number alone is seconds; otherwise one or more NUMBER UNIT parts, largest unit first,
# each unit once: 90, 90s, 30m, 1h30m, 2d4h, 1h 30m.
_DURATION = re.compile(r"(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?")


def parse_duration(text: str) -> int:
    """'90', '90s', '30m', '1h30m', '2d4h' -> seconds; '0' disables. ValueError otherwise."""
    spelled = text.strip().lower()
    if spelled.isdigit():
        return int(spelled)
    match = _DURATION.fullmatch(spelled)
    if not spelled or not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration like 90s, 30m, 1h30m, 4h or 0")
    return sum(int(part) * unit for part, unit in zip(match.groups(), _UNIT_S.values(),
                                                      strict=True) if part)


def _duration(value: object) -> int:
    try:
        return parse_duration(_string(value))
    except ValueError:
        raise _Bad(DURATION_ALLOWED) from None


def _wait(value: object) -> int:
    """How long to wait for something (--timeout, --queue-timeout): 0 would mean giving
    up before starting, not "no limit", so it is refused."""
    seconds = _duration(value)
    if seconds < 1:
        raise _Bad(WAIT_ALLOWED)
    return seconds


def _warnings(value: object) -> tuple[int, ...]:
    """--walltime-warnings: durations before a job's end, comma-separated; "" for none."""
    text = _string(value)
    marks: set[int] = set()
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        try:
            seconds = parse_duration(part)
        except ValueError:
            seconds = 0
        if seconds < 1:
            raise _Bad(WARNINGS_ALLOWED)
        marks.add(seconds)
    return tuple(sorted(marks, reverse=True))


def _env(value: object) -> model.EnvSpec | None:
    text = _string(value) if value is not None else ""
    if not text:
        return None
    try:
        return model.parse_env_spec(text)
    except ConfigError as exc:
        raise _Bad(_after(exc, f"bad --env {text!r}: ")) from None


def _app(value: object) -> str:
    if value not in APPS:
        raise _Bad(f"use one of {', '.join(APPS)}")
    return str(value)


def _dir(value: object) -> str:
    text = _string(value)
    # Any other character is a file name's and reaches the remote literally (newlines too);
    # a NUL cannot be in a path, nor in the sh script that carries it.
    if "\0" in text:
        raise _Bad("use a path without a NUL character")
    return text


def _name(value: object) -> str:
    text = _string(value)
    if text and not is_valid_name(text):
        raise _Bad(NAME_ALLOWED)
    return text  # "" = not given: the server is named after --dir (session.default_name)


def _port(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _Bad("use a port number 1-65535")
    return value


def _forwards(value: object) -> tuple[Forward, ...]:
    if not isinstance(value, (list, tuple)):
        raise _Bad("use a list like [6006, \"8787:18787\"]")
    forwards: list[Forward] = []
    for item in value:
        try:
            forward = parse_forward(item)
        except ValueError:
            raise _Bad(FORWARD_ALLOWED, item=item) from None
        if forward in forwards:
            continue  # the same forward twice is the same forward
        if forward.local_port is not None and forward.local_port in {
                other.local_port for other in forwards}:
            raise _Bad(f"local port {forward.local_port} is already another forward's; give "
                       "each its own LOCAL_PORT", item=item)
        forwards.append(forward)
    return tuple(forwards)


def _gpus(value: object) -> str:
    text = _string(value)
    if not text.strip():
        return ""
    try:
        from labhop import gpus  # noqa: PLC0415 -- only a command given --gpus pays

        gpus.parse_gpu_selection(text)
    except ConfigError as exc:
        raise _Bad(_after(exc, f"bad --gpus {text!r}: ")) from None
    return text.strip()


def _slurm(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    text = _string(value)
    try:
        shlex.split(text)
    except ValueError as exc:
        raise _Bad(f"{exc} (quote the sbatch options as in a shell)") from None
    try:
        return sbatch_args(text)
    except ConfigError as exc:
        raise _Bad(_after(exc, "--slurm "), sentence=True) from None


def sbatch_args(text: str | None) -> tuple[str, ...] | None:
    """--slurm's text as sbatch arguments, refusing those that would replace or break the
    job labhop submits (its script, name, log and the job id it reads back)."""
    if text is None:
        return None
    try:
        args = tuple(shlex.split(text))
    except ValueError as exc:
        raise ConfigError(f"--slurm cannot split {text!r}: {exc}") from exc
    log = "labhop keeps the job's log in its state directory (see labhop logs)"
    # Long name -> (short letter, shortest abbreviation sbatch's getopt_long takes, why).
    reserved = {
        "wrap": ("", "wr", "labhop writes the job script itself"),
        "output": ("o", "ou", log),
        "error": ("e", "er", log),
        "open-mode": ("", "op", log),
        "job-name": ("J", "job-", "labhop names the job labhop-NAME (choose NAME with --name)"),
        "parsable": ("", "pars", "labhop passes it itself to read the job id"),
    }
    for arg in args:
        if arg.startswith("--"):
            typed = arg[2:].partition("=")[0]
            hits = [long for long, (_, shortest, _) in reserved.items()
                    if typed.startswith(shortest) and long.startswith(typed)]
        elif arg.startswith("-") and len(arg) > 1:
            typed = arg[1]
            hits = [long for long, (short, _, _) in reserved.items() if short == typed]
        else:
            continue
        if hits:
            option = arg.partition("=")[0] if arg.startswith("--") else arg[:2]
            shown = option if option == f"--{hits[0]}" else f"{option} (--{hits[0]})"
            raise ConfigError(f"--slurm cannot take {shown}: {reserved[hits[0]][2]}")
    return args


@dataclass(frozen=True)
class Option:
    key: str  # the config key, also the field of Options
    flag: str  # the command-line option
    default: object  # the built-in default, as typed (a duration is text)
    check: Callable[[object], object]


# In the order they are checked (the first bad value is the one reported).
OPTIONS: dict[str, Option] = {option.key: option for option in (
    Option("app", "--app", DEFAULT_APP, _app),
    Option("env", "--env", None, _env),
    Option("dir", "--dir", "", _dir),
    Option("name", "--name", "", _name),
    Option("port", "--port", None, _port),
    Option("forward", "--forward", (), _forwards),
    Option("no_browser", "--no-browser", False, _flag),
    Option("keep", "--keep", False, _flag),
    Option("idle_timeout", "--idle-timeout", "6h", _duration),
    Option("timeout", "--timeout", "120s", _wait),
    Option("slurm", "--slurm", None, _slurm),
    Option("queue_timeout", "--queue-timeout", "15m", _wait),
    Option("walltime_warnings", "--walltime-warnings", "10m,2m", _warnings),
    Option("gpus", "--gpus", "", _gpus),
    # `multiplex = false` in the file is `--no-multiplex` on the command line.
    Option("multiplex", "--no-multiplex", True, _flag),
    Option("persist", "--persist", "0", _duration),
)}


ALL_KEYS = tuple(OPTIONS)


BUILT_IN_DEFAULTS: dict[str, object] = {key: option.default for key, option in OPTIONS.items()}


# What every command reads from the config file: how to reach the host.
CONNECTION_KEYS = ("multiplex", "persist")


@dataclass(frozen=True)
class Options:
    """Checked values, one field per config key; `sources[key]` says where each came from."""

    app: str
    env: model.EnvSpec | None
    dir: str
    name: str
    port: int | None
    forward: tuple[Forward, ...]
    no_browser: bool
    keep: bool
    idle_timeout: int  # seconds, as every duration
    timeout: int
    slurm: tuple[str, ...] | None  # sbatch arguments; None: not a Slurm job
    queue_timeout: int
    walltime_warnings: tuple[int, ...]  # seconds before a job's end, largest first
    gpus: str  # as typed, stripped; "" = not given (checked again once connected)
    multiplex: bool
    persist: int
    sources: Mapping[str, Source] = field(default_factory=dict)


def resolve(host: str, given: Mapping[str, Given], *,
            from_file: Collection[str] = ALL_KEYS,
            config: profiles.Profiles | None = None) -> Options:
    """Every option for a command on `host`: what was typed (`given`, by config key), else
    what the config file sets for the keys in `from_file` ([hosts.HOST], then [defaults]),
    else the built-in default. Raises CommandLineError (exit 2) for a bad typed value and
    ConfigError (exit 3) for a bad value in the file, naming where it came from."""
    unknown = set(given) - set(OPTIONS)
    if unknown:
        raise ValueError(f"not a launch option: {sorted(unknown)}")
    config = config if config is not None else profiles.load()
    values: dict[str, object] = {}
    sources: dict[str, Source] = {}
    for key, option in OPTIONS.items():
        raw, source = _pick(host, key, given, from_file, config)
        try:
            values[key] = option.check(raw)
        except _Bad as bad:
            value = raw if bad.item is _WHOLE else bad.item
            shown = source.typed if bad.sentence and source.typed_by_user else source.show(value)
            message = f"{shown} {bad}" if bad.sentence else f"bad {shown}: {bad}"
            raise source.error(message) from None
        sources[key] = source
        if key in given or key in from_file:
            _LOGGER.debug("%s = %r (from %s)", key, raw, source)
    if values["gpus"] and values["slurm"] is not None:
        gpus_source, slurm_source = sources["gpus"], sources["slurm"]
        # Slurm decides which GPUs a job gets and sets CUDA_VISIBLE_DEVICES itself.
        message = (f"{_naming(gpus_source, '--gpus')} is for a host you ssh into; with "
                   f"{_naming(slurm_source, '--slurm')} ask Slurm for GPUs, e.g. "
                   "--slurm '--gres=gpu:1'")
        typed = gpus_source.typed_by_user or slurm_source.typed_by_user
        raise CommandLineError(message) if typed else ConfigError(message)
    _check_forwards_against_port(values, sources)
    return Options(**values, sources=sources)  # type: ignore[arg-type]  # checked above


def _check_forwards_against_port(values: Mapping[str, object],
                                 sources: Mapping[str, Source]) -> None:
    """A --forward's LOCAL_PORT cannot also be the browser's --port."""
    port = values["port"]
    forwards = values["forward"]
    assert isinstance(forwards, tuple)
    for forward in forwards:
        if port is not None and forward.local_port == port:
            forward_source, port_source = sources["forward"], sources["port"]
            message = (f"{_naming(forward_source, '--forward')} {str(forward)!r} and "
                       f"{_naming(port_source, '--port')} {port} both ask for local port "
                       f"{port}; give the forward another LOCAL_PORT")
            typed = forward_source.typed_by_user or port_source.typed_by_user
            raise CommandLineError(message) if typed else ConfigError(message)


def _pick(host: str, key: str, given: Mapping[str, Given], from_file: Collection[str],
          config: profiles.Profiles) -> tuple[object, Source]:
    if key in given:
        return given[key].value, Source(COMMAND_LINE, key, typed=given[key].typed)
    found = config.locate(host, key) if key in from_file else None
    if found is not None:
        return found[0], Source(CONFIG_FILE, key, table=found[1], path=config.path)
    return OPTIONS[key].default, Source(BUILT_IN, key, typed=OPTIONS[key].flag)


def _naming(source: Source, flag: str) -> str:
    """An option in a sentence: '--gpus', or 'gpus ([hosts.gamer] in PATH)'."""
    if source.kind == CONFIG_FILE:
        return f"{source.key} ([{source.table}] in {source.path})"
    return source.typed or flag

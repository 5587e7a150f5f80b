"""Launch options: one resolver for the command line, the config file and the built-ins.

Each bad value is one `labhop: error:` line that says where it came from (the option, or
the file, table and key) and what is allowed: exit 2 when typed, 3 when in the file. All run
through `main` in-process against a host that cannot resolve, with every way labhop
starts a process replaced by a failure: each error must come before any ssh.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from labhop import model
from labhop.cli import shared
from labhop.cli.ls import list_command
from labhop.cli.main import main
from labhop.cli.start import start as start_command
from labhop.config import options, profiles
from labhop.config.options import Given, Source
from labhop.errors import CommandLineError, ConfigError, ExitStatus
from labhop.ssh import proc

HOST = "nosuchhost.invalid"
TABLE = f'[hosts."{HOST}"]'


@pytest.fixture(autouse=True)
def _no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here may start ssh (or anything else): a check that comes too late fails."""
    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError(f"a process was started: {args!r}")

    for name in ("run", "run_interactive", "spawn", "start_inheriting", "spawn_guarded"):
        monkeypatch.setattr(proc, name, refuse)


@pytest.fixture
def config_path() -> Path:
    """The config.toml that labhop reads in this test (conftest points LABHOP_CONFIG_DIR
    at tmp_path/labhop-config)."""
    path = profiles.config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def _reset_logging() -> Iterator[None]:
    yield
    logging.getLogger("labhop").handlers[:] = []
    logging.getLogger("labhop").setLevel(logging.WARNING)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    captured = capsys.readouterr()
    assert captured.out == ""
    return int(caught.value.code or 0), captured.err.splitlines()


def one_error(argv: list[str], capsys: pytest.CaptureFixture[str], status: int) -> str:
    """The error line of a run that fails with `status`; a mistake on the command line
    (2) adds where to read the options, and nothing else is printed."""
    code, lines = run(argv, capsys)
    text = "\n".join(lines)
    assert code == status, text
    assert "Traceback" not in text
    assert "Usage:" not in text
    command = argv[0] if argv and argv[0] in ("attach", "ls", "stop", "logs", "gpus",
                                               "doctor") else "start"
    hint = [f"Try 'labhop {command} --help' for help."] if status == ExitStatus.USAGE else []
    assert lines[1:] == hint, text
    assert lines[0].startswith("labhop: error: ")
    return lines[0].removeprefix("labhop: error: ")


# ---------------------------------------------------------------------------------------
# Typed on the command line: exit 2, the option named.

TYPED = [
    (["--name", "a b"], "bad --name 'a b': use letters, digits, '-', '_' and '.' only"),
    (["--name", ".hidden"], "bad --name '.hidden': use letters"),
    (["--env", "pytorch"], "bad --env 'pytorch': use conda:NAME, mamba:NAME"),
    (["--env", "conda:"], "bad --env 'conda:': use conda:NAME"),
    (["--gpus", "seven"], "bad --gpus 'seven': use auto (the GPU with the most free memory)"),
    (["--slurm", '"x'], "bad --slurm '\"x': No closing quotation"),
    (["--slurm", "-p gpu --wrap=hostname"],
     "--slurm cannot take --wrap: labhop writes the job script itself"),
    (["--slurm", "-J mine"], "--slurm cannot take -J (--job-name): labhop names the job"),
    (["--idle-timeout", "5 parsecs"], "bad --idle-timeout '5 parsecs': use a duration like 90s"),
    (["--timeout", "soon"], "bad --timeout 'soon': use a duration like 90s"),
    (["--queue-timeout", "1.5h"], "bad --queue-timeout '1.5h': use a duration like 90s"),
    (["--timeout", "0"], "bad --timeout '0': use a duration of at least 1s"),
    (["--queue-timeout", "0s"], "bad --queue-timeout '0s': use a duration of at least 1s"),
    (["--persist", "-1"], "bad --persist '-1': use a duration like 90s"),
    (["--dir", "proj\0x"], "bad --dir 'proj\\x00x': use a path without a NUL character"),
    (["--gpus", "0", "--slurm", "-p gpu"],
     "--gpus is for a host you ssh into; with --slurm ask Slurm for GPUs"),
    (["--forward", "tensorboard"], f"bad --forward 'tensorboard': {model.FORWARD_ALLOWED}"),
    (["--forward", "0"], f"bad --forward '0': {model.FORWARD_ALLOWED}"),
    (["--forward", "6006:70000"], f"bad --forward '6006:70000': {model.FORWARD_ALLOWED}"),
    (["--forward", "6006:"], f"bad --forward '6006:': {model.FORWARD_ALLOWED}"),
    # The bad one of several is named, not the whole list.
    (["--forward", "6006", "--forward", "1:2:3"], "bad --forward '1:2:3': use REMOTE_PORT"),
    (["--forward", "6006:16006", "--forward", "6007:16006"],
     "bad --forward '6007:16006': local port 16006 is already another forward's"),
    (["--forward", "6006:8890", "--port", "8890"],
     "--forward '6006:8890' and --port 8890 both ask for local port 8890"),
]


@pytest.mark.parametrize(("args", "message"), TYPED, ids=[" ".join(a) for a, _ in TYPED])
def test_a_bad_typed_value_is_one_line_naming_the_option(
        args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = one_error([HOST, "--no-browser", *args], capsys, ExitStatus.USAGE)
    assert line.startswith(message)


def test_a_typed_value_wins_over_a_bad_one_in_the_file(
        config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path.write_text(f'{TABLE}\nname = "a b"\n')
    # The file's bad name is never used, so never reported: the typed one is.
    assert one_error([HOST, "--name", "x y"], capsys, 2).startswith("bad --name 'x y'")


# ---------------------------------------------------------------------------------------
# In the config file: exit 3, the file, the table and the key named.

IN_FILE = [
    ('name = "a b"', "bad name = 'a b' ({where}): use letters, digits"),
    ('env = "pytorch"', "bad env = 'pytorch' ({where}): use conda:NAME, mamba:NAME"),
    ('gpus = "seven"', "bad gpus = 'seven' ({where}): use auto (the GPU"),
    ('slurm = "\\"x"', "bad slurm = '\"x' ({where}): No closing quotation"),
    ('slurm = "--output=x.log"',
     "slurm = '--output=x.log' ({where}) cannot take --output: labhop keeps the job's log"),
    ('idle_timeout = "5 parsecs"', "bad idle_timeout = '5 parsecs' ({where}): use a duration"),
    ('timeout = "soon"', "bad timeout = 'soon' ({where}): use a duration"),
    ('queue_timeout = "1.5h"', "bad queue_timeout = '1.5h' ({where}): use a duration"),
    ('persist = "forever"', "bad persist = 'forever' ({where}): use a duration"),
    ('app = "jupyter"', "bad app = 'jupyter' ({where}): use one of lab, notebook, server"),
    ("port = 0", "bad port = 0 ({where}): use a port number 1-65535"),
    ("port = 70000", "bad port = 70000 ({where}): use a port number 1-65535"),
    ('dir = "a\\u0000b"', "bad dir = 'a\\x00b' ({where}): use a path without a NUL character"),
    ('forward = [6006, "tensorboard"]',
     f"bad forward = 'tensorboard' ({{where}}): {model.FORWARD_ALLOWED}"),
    ("forward = [0]", f"bad forward = 0 ({{where}}): {model.FORWARD_ALLOWED}"),
    ("forward = [true]", f"bad forward = true ({{where}}): {model.FORWARD_ALLOWED}"),
    ('forward = ["6006:99999"]', "bad forward = '6006:99999' ({where}): use REMOTE_PORT"),
    ('forward = ["1:7000", "2:7000"]',
     "bad forward = '2:7000' ({where}): local port 7000 is already another forward's"),
    ('port = 8890\nforward = ["6006:8890"]',
     "forward ({where}) '6006:8890' and port ({where}) 8890 both ask for local port 8890"),
    # The file's types are checked when it is read (profiles), naming the key as well.
    ('multiplex = "no"', '{path}: multiplex in [hosts.{host}] must be true or false, not "no"'),
    ("keep = 1", "{path}: keep in [hosts.{host}] must be true or false, not 1"),
    ("forward = 6006",
     '{path}: forward in [hosts.{host}] must be a list, like [6006, "8787:18787"], not 6006'),
    ('no_browser = "yes"', "{path}: no_browser in [hosts.{host}] must be true or false"),
]


@pytest.mark.parametrize(("line", "message"), IN_FILE, ids=[line for line, _ in IN_FILE])
def test_a_bad_value_in_the_file_is_one_line_naming_file_and_key(
        line: str, message: str, config_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    config_path.write_text(f"{TABLE}\n{line}\n")
    error = one_error([HOST, "--no-browser"], capsys, ExitStatus.CONFIG)
    where = f"[hosts.{HOST}] in {config_path}"
    assert error.startswith(message.format(where=where, path=config_path, host=HOST))
    assert str(config_path) in error


def test_a_bad_default_names_the_defaults_table(
        config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path.write_text('[defaults]\nidle_timeout = "5 parsecs"\n')
    assert one_error([HOST], capsys, 3) == (
        f"bad idle_timeout = '5 parsecs' ([defaults] in {config_path}): "
        f"{options.DURATION_ALLOWED}")


def test_gpus_in_the_file_and_slurm_in_the_file_name_both(
        config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path.write_text(f'[defaults]\ngpus = "auto"\n{TABLE}\nslurm = "-p gpu"\n')
    error = one_error([HOST], capsys, 3)
    assert error.startswith(f"gpus ([defaults] in {config_path}) is for a host you ssh into; "
                            f"with slurm ([hosts.{HOST}] in {config_path}) ask Slurm")
    # Typing one of the two makes it a command-line mistake.
    error = one_error([HOST, "--slurm", "-p x"], capsys, 2)
    assert error.startswith(f"gpus ([defaults] in {config_path}) is for a host you ssh "
                            "into; with --slurm ask Slurm")


def test_keys_a_command_does_not_read_are_not_checked_for_it(
        config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`ls` reads only how to connect; a bad `env` is start's to report."""
    config_path.write_text('[defaults]\nenv = "pytorch"\npersist = "forever"\n')
    error = one_error(["ls", HOST], capsys, 3)
    assert error.startswith(f"bad persist = 'forever' ([defaults] in {config_path})")


# ---------------------------------------------------------------------------------------
# --persist and --no-multiplex: every command, through the same resolver.

SSH_COMMANDS = [["start", HOST], ["attach", HOST], ["ls", HOST], ["stop", HOST],
                ["logs", HOST], ["gpus", HOST]]


@pytest.mark.parametrize("command", SSH_COMMANDS, ids=[c[0] for c in SSH_COMMANDS])
def test_every_command_checks_persist(command: list[str], config_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert one_error([*command, "--persist", "5 parsecs"], capsys, 2).startswith(
        "bad --persist '5 parsecs': use a duration")
    config_path.write_text(f'{TABLE}\npersist = "5 parsecs"\n')
    assert one_error([*command, "--no-multiplex"], capsys, 3).startswith(
        f"bad persist = '5 parsecs' ([hosts.{HOST}] in {config_path})")


@pytest.mark.parametrize("command", SSH_COMMANDS, ids=[c[0] for c in SSH_COMMANDS])
def test_every_command_fills_the_target_from_the_file(
        command: list[str], config_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    config_path.write_text(f'{TABLE}\nmultiplex = false\npersist = "1h"\n')
    targets = []

    def stop_here(host: str, params: dict[str, object],
                  resolved: options.Options | None = None) -> object:
        targets.append(real(host, params, resolved))
        raise ConfigError("stopped before connecting")

    real = shared.make_target
    monkeypatch.setattr(shared, "make_target", stop_here)
    assert one_error(command, capsys, 3) == "stopped before connecting"
    assert [(t.multiplex, t.persist_s) for t in targets] == [(False, 3600)]
    # The command line still wins.
    one_error([*command, "--persist", "2m"], capsys, 3)
    assert [(t.multiplex, t.persist_s) for t in targets[1:]] == [(False, 120)]


def test_no_multiplex_on_the_command_line_wins_over_the_file(config_path: Path) -> None:
    config = profiles.load(config_path)
    resolved = options.resolve(HOST, {"multiplex": Given(False, "--no-multiplex")},
                               config=config)
    assert resolved.multiplex is False
    assert str(resolved.sources["multiplex"]) == "--no-multiplex"
    ctx = list_command.make_context("ls", [HOST, "--no-multiplex"])
    assert shared.typed_options(ctx) == {"multiplex": Given(False, "--no-multiplex")}


# ---------------------------------------------------------------------------------------
# attach's NAME argument.


def test_attach_names_its_name_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert one_error(["attach", HOST, "a/b"], capsys, 2).startswith(
        "bad NAME 'a/b': use letters, digits")


# ---------------------------------------------------------------------------------------
# click's own errors: one line, then at most where to read the options.

CLICK_ERRORS = [
    (["start"], "Missing argument 'HOST'.", "start"),
    (["ls"], "Missing argument 'HOST'.", "ls"),
    ([HOST, "--bogus"], "No such option", "start"),
    (["logs", HOST, "--bogus"], "No such option", "logs"),
    ([HOST, "--app", "jupyter"], "Invalid value for '--app': 'jupyter' is not one of", "start"),
    ([HOST, "--port", "abc"], "Invalid value for '--port'", "start"),
    ([HOST, "--port", "0"], "Invalid value for '--port'", "start"),
    (["logs", HOST, "-n", "many"], "Invalid value for '-n' / '--lines'", "logs"),
    ([HOST, "--keep=yes"], "Option '--keep' does not take a value.", "start"),
    (["stop", HOST, "x", "--all"], "give a NAME or --all, not both", "stop"),
    (["attach"], "Missing argument 'HOST'.", "attach"),
    (["gpus", HOST, "-p", "x"], "Invalid value for '-p'", "gpus"),
]


@pytest.mark.parametrize(("argv", "message", "command"), CLICK_ERRORS,
                         ids=[" ".join(a) for a, _, _ in CLICK_ERRORS])
def test_clicks_errors_are_labhops_one_line(argv: list[str], message: str, command: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run(argv, capsys)
    assert code == ExitStatus.USAGE
    assert lines[0].startswith(f"labhop: error: {message}"), lines
    assert lines[1:] == [f"Try 'labhop {command} --help' for help."]


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["start", "--help"], [HOST, "--help"],
                                  ["ls", "-h"], ["--version"], ["-V"]])
def test_help_and_version_still_work(argv: list[str],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code in (0, None)
    out = capsys.readouterr().out
    assert "Usage: labhop" in out or "labhop, version" in out


def test_labhop_alone_still_shows_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([])
    captured = capsys.readouterr()
    assert "Usage: labhop [OPTIONS] HOST" in captured.out + captured.err
    assert "labhop: error" not in captured.err


# ---------------------------------------------------------------------------------------
# --debug: where each value came from.


@pytest.mark.usefixtures("_reset_logging")
def test_debug_logs_each_values_source(config_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    config_path.write_text(f'[defaults]\nidle_timeout = "4h"\n{TABLE}\nenv = "conda:x"\n'
                           'gpus = "0"\n')
    # The Slurm/--gpus clash is checked after every value, so each one is logged first.
    code, lines = run(["--debug", HOST, "--name", "proj", "--slurm", "-p gpu"], capsys)
    assert code == 2
    debug = [line.removeprefix("debug labhop.config.options: ") for line in lines
             if line.startswith("debug labhop.config.options: ")]
    assert f"env = 'conda:x' (from {config_path} [hosts.{HOST}] env)" in debug
    assert f"idle_timeout = '4h' (from {config_path} [defaults] idle_timeout)" in debug
    assert "name = 'proj' (from --name)" in debug
    assert "timeout = '120s' (from built-in default)" in debug
    assert len(debug) == len(options.OPTIONS)


# ---------------------------------------------------------------------------------------
# The resolver itself.


def test_precedence_and_sources(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[defaults]\nidle_timeout = "4h"\napp = "notebook"\n'
                    '[hosts.gamer]\napp = "server"\nport = 8890\nmultiplex = false\n')
    config = profiles.load(path)
    resolved = options.resolve("gamer", {"name": Given("proj", "--name")}, config=config)
    assert (resolved.name, resolved.app, resolved.idle_timeout, resolved.port) == (
        "proj", "server", 14400, 8890)
    assert (resolved.timeout, resolved.queue_timeout, resolved.persist) == (120, 900, 0)
    assert resolved.multiplex is False
    assert resolved.env is None and resolved.slurm is None
    assert str(resolved.sources["name"]) == "--name"
    assert str(resolved.sources["app"]) == f"{path} [hosts.gamer] app"
    assert str(resolved.sources["idle_timeout"]) == f"{path} [defaults] idle_timeout"
    assert str(resolved.sources["timeout"]) == "built-in default"
    other = options.resolve("other", {}, config=config)
    assert (other.app, other.port, other.multiplex) == ("notebook", None, True)
    # Keys outside `from_file` keep their built-in default.
    only = options.resolve("gamer", {}, from_file=options.CONNECTION_KEYS, config=config)
    assert (only.app, only.idle_timeout, only.multiplex) == ("lab", 21600, False)


def test_values_are_checked_and_converted(tmp_path: Path) -> None:
    config = profiles.load(tmp_path / "none.toml")
    given = {"env": Given("conda:pytorch", "--env"), "gpus": Given(" 0,1 ", "--gpus"),
             "slurm": Given(None, "--slurm"), "persist": Given("1h", "--persist"),
             "dir": Given("~/odd\nfolder", "--dir")}  # a file name's characters are kept
    resolved = options.resolve("gamer", given, config=config)
    assert resolved.env == model.EnvSpec("conda", "pytorch")
    assert (resolved.gpus, resolved.persist, resolved.dir) == ("0,1", 3600, "~/odd\nfolder")
    slurm = options.resolve("c", {"slurm": Given("-p gpu -t 1:00:00", "--slurm")},
                            config=config)
    assert slurm.slurm == ("-p", "gpu", "-t", "1:00:00")


def test_forwards_from_the_file_and_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[defaults]\nforward = [8787]\n'
                    '[hosts.gamer]\nforward = [6006, "8501:18501", " 8888 "]\n')
    config = profiles.load(path)
    Forward = model.Forward
    gamer = options.resolve("gamer", {}, config=config)
    assert gamer.forward == (Forward(6006), Forward(8501, 18501), Forward(8888))
    assert str(gamer.sources["forward"]) == f"{path} [hosts.gamer] forward"
    assert options.resolve("other", {}, config=config).forward == (Forward(8787),)
    # Typed, the forwards replace the file's list; the same forward twice is one.
    typed = options.resolve("gamer", {"forward": Given(("6006:16006", "6006:16006", "7000"),
                                                       "--forward")}, config=config)
    assert typed.forward == (Forward(6006, 16006), Forward(7000))
    assert [str(forward) for forward in typed.forward] == ["6006:16006", "7000"]
    assert options.resolve("x", {}, config=profiles.load(tmp_path / "none")).forward == ()


def test_attach_reads_forward_too(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert one_error(["attach", HOST, "--forward", "x"], capsys, 2).startswith(
        "bad --forward 'x': use REMOTE_PORT")
    config_path.write_text(f'{TABLE}\nforward = ["x"]\n')
    assert one_error(["attach", HOST], capsys, 3).startswith(
        f"bad forward = 'x' ([hosts.{HOST}] in {config_path})")


def test_the_error_class_follows_the_source(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[hosts.gamer]\nname = "a b"\n')
    config = profiles.load(path)
    with pytest.raises(ConfigError):
        options.resolve("gamer", {}, config=config)
    with pytest.raises(CommandLineError) as caught:
        options.resolve("gamer", {"name": Given("x y", "--name")}, config=config)
    assert caught.value.status == ExitStatus.USAGE


def test_source_strings(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    typed = Source(options.COMMAND_LINE, "name", typed="--name")
    in_file = Source(options.CONFIG_FILE, "name", table="hosts.gamer", path=path)
    built_in = Source(options.BUILT_IN, "idle_timeout", typed="--idle-timeout")
    assert (str(typed), str(in_file), str(built_in)) == (
        "--name", f"{path} [hosts.gamer] name", "built-in default")
    assert typed.show("a b") == "--name 'a b'"
    assert in_file.show("a b") == f"name = 'a b' ([hosts.gamer] in {path})"
    assert in_file.show(False) == f"name = false ([hosts.gamer] in {path})"


def test_every_config_key_is_an_option_of_start() -> None:
    """The resolver, the file's keys and `labhop start`'s options name the same things."""
    assert set(options.OPTIONS) == set(profiles.KEYS)
    assert set(shared._OPTION_KEYS.values()) == set(options.OPTIONS)
    params = {param.name: param for param in start_command.params}
    for name, key in shared._OPTION_KEYS.items():
        param = params[name]
        assert isinstance(param, click.Option)
        assert options.OPTIONS[key].flag in param.opts, key
        if isinstance(param.default, str):
            assert param.default == options.OPTIONS[key].default, key


def test_unknown_given_keys_are_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a launch option"):
        options.resolve("h", {"colour": Given("x", "--colour")},
                        config=profiles.load(tmp_path / "none.toml"))

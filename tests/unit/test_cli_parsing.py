"""Pure parts of the CLI: durations, names, and how argv reaches the commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from labhop.cli.main import main
from labhop.cli.main import split_jupyter_args as _split_jupyter_args
from labhop.config.options import parse_duration
from labhop.config.options import sbatch_args as _sbatch_args
from labhop.errors import ConfigError, ExitStatus
from labhop.model import Forward, is_valid_name, parse_forward
from labhop.session import sessions
from labhop.session.supervisor import StartRequest, default_name


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("90", 90),
        ("90s", 90),
        ("30m", 1800),
        ("4h", 14400),
        ("1d", 86400),
        (" 2H ", 7200),
        ("1h30m", 5400),
        ("2d4h", 187200),
        ("1h 30m", 5400),
        ("1m30s", 90),
        ("1d2h3m4s", 93784),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "-1", "4 hours", "1.5h", "30m1h", "1h1h", "h", "1x"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_arguments_after_double_dash_go_to_jupyter() -> None:
    assert _split_jupyter_args(["gamer", "--keep", "--", "--debug", "--", "x"]) == (
        ["gamer", "--keep"],
        ["--debug", "--", "x"],
    )
    assert _split_jupyter_args(["gamer"]) == (["gamer"], [])


@pytest.mark.parametrize(
    ("value", "forward"),
    [
        ("6006", Forward(6006)),
        (6006, Forward(6006)),
        ("6006:16006", Forward(6006, 16006)),
        (" 8787:8787 ", Forward(8787, 8787)),
        ("1", Forward(1)),
        ("65535:1", Forward(65535, 1)),
    ],
)
def test_parse_forward(value: object, forward: Forward) -> None:
    assert parse_forward(value) == forward


@pytest.mark.parametrize(
    "value",
    ["", "0", "65536", "6006:0", "6006:", ":6006", "6006:7000:8000", "-1", "6006-6010",
     "localhost:6006", "6006 7000", "0x10", "١٢٣", True, None, 6006.0, 0, 70000, [6006]],
)
def test_parse_forward_refuses(value: object) -> None:
    with pytest.raises(ValueError, match=r"REMOTE_PORT|1-65535"):
        parse_forward(value)


@pytest.mark.parametrize(
    ("root", "name"),
    [("", "home"), ("~", "home"), ("~/proj", "proj"), ("/data/my proj/", "my-proj"), ("/", "home")],
)
def test_default_name_comes_from_the_root_dir(root: str, name: str) -> None:
    assert default_name(root) == name


@pytest.mark.parametrize("name", ["../x", ".hidden", "a b", "x/y", ""])
def test_bad_names_are_refused(name: str) -> None:
    assert not is_valid_name(name)


@pytest.mark.parametrize(
    ("text", "named", "why"),
    [
        ("--wrap 'sleep 1'", "--wrap", "labhop writes the job script itself"),
        ("-p gpu --wrap=hostname", "--wrap", "labhop writes the job script itself"),
        ("-o /tmp/x.log", "-o (--output)", "job's log"),
        ("-o/tmp/x.log", "-o (--output)", "job's log"),
        ("--output=/tmp/x.log", "--output", "job's log"),
        ("--out /tmp/x.log", "--out (--output)", "job's log"),
        ("-e err.log", "-e (--error)", "job's log"),
        ("--error=err.log", "--error", "job's log"),
        ("--open-mode=truncate", "--open-mode", "job's log"),
        ("-J mine", "-J (--job-name)", "labhop names the job"),
        ("--job-name=mine", "--job-name", "labhop names the job"),
        ("--parsable", "--parsable", "to read the job id"),
    ],
)
def test_slurm_options_that_break_labhops_job_are_refused(text: str, named: str,
                                                          why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _sbatch_args(text)
    message = str(caught.value)
    assert message.startswith(f"--slurm cannot take {named}: ")
    assert why in message
    assert "\n" not in message
    assert caught.value.status == ExitStatus.CONFIG


def test_slurm_refusal_typed_exits_2_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LABHOP_CONFIG_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as caught:
        main(["nosuchhost.invalid", "--no-browser", "--slurm", "-p gpu --wrap=hostname"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "labhop: error: --slurm cannot take --wrap: labhop writes the job script itself",
        "Try 'labhop start --help' for help."]


def test_slurm_refusal_in_the_config_file_exits_3_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LABHOP_CONFIG_DIR", str(tmp_path))
    (tmp_path / "config.toml").write_text(
        '[hosts."nosuchhost.invalid"]\nslurm = "-p gpu --wrap=hostname"\n')
    with pytest.raises(SystemExit) as caught:
        main(["nosuchhost.invalid", "--no-browser"])
    assert caught.value.code == 3
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "labhop: error: slurm = '-p gpu --wrap=hostname' ([hosts.nosuchhost.invalid] in "
        f"{tmp_path / 'config.toml'}) cannot take --wrap: labhop writes the job script itself"]


def test_ordinary_slurm_options_pass_through() -> None:
    text = "-p gpu -t 01:00:00 --gres=gpu:1 --partition=debug --export=ALL -N 1 --exclusive"
    assert _sbatch_args(text) == tuple(text.split())
    assert _sbatch_args(None) is None


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--no-wait"], "--no-wait needs --detach: without it labhop waits for the server "
                        "anyway, to tunnel to it"),
        (["--slurm", "-p gpu", "--no-wait"], "--no-wait needs --detach: without it labhop "
                                             "waits for the server anyway, to tunnel to it"),
        (["--detach", "--no-wait"], "--no-wait needs --slurm (or `slurm` in the config "
                                    "file): only a batch job waits in a queue"),
    ],
)
def test_no_wait_without_detach_and_slurm_is_a_usage_error(
        args: list[str], line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LABHOP_CONFIG_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as caught:
        main(["nosuchhost.invalid", *args])
    assert caught.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"labhop: error: {line}", "Try 'labhop start --help' for help."]


def test_no_wait_takes_slurm_from_the_config_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABHOP_CONFIG_DIR", str(tmp_path))
    (tmp_path / "config.toml").write_text('[hosts."nosuchhost.invalid"]\nslurm = "-p gpu"\n')
    requests: list[StartRequest] = []
    monkeypatch.setattr(sessions, "start",
                        lambda request, ui: requests.append(request) or 0)
    with pytest.raises(SystemExit) as caught:
        main(["nosuchhost.invalid", "-d", "--no-wait"])
    assert caught.value.code == 0
    [request] = requests
    assert (request.detach, request.no_wait, request.slurm) == (True, True, ("-p", "gpu"))

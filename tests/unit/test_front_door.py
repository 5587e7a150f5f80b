"""The front door (labhop.cli.main): a bug is one line and exit status 70, never a
traceback, and a --json reader still gets its final `error` event; --version and --help
answer without loading click."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from labhop.cli import ls as ls_cli
from labhop.cli import main as front_door
from labhop.cli import registry
from labhop.cli.main import main
from labhop.commands import start as start_command
from labhop.errors import ExitStatus
from labhop.ssh import proc


def boom(*args: object, **kwargs: object) -> object:
    raise RuntimeError("boom\nsecond line")


@pytest.fixture(autouse=True)
def _own_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABHOP_CONFIG_DIR", str(tmp_path))


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    out, err = capsys.readouterr()
    return int(caught.value.code or 0), out, err


def test_an_unexpected_exception_is_one_line_and_status_70(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(ls_cli, "list_servers", boom)
    code, out, err = run(["ls", "gamer"], capsys)
    assert code == ExitStatus.INTERNAL == 70
    assert out == ""
    assert err.splitlines() == [
        "labhop: error: internal error: RuntimeError: boom second line (run again with "
        "--traceback and report it)"]


def test_traceback_shows_where_it_happened(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ls_cli, "list_servers", boom)
    with pytest.raises(RuntimeError, match="boom"):
        main(["ls", "gamer", "--traceback"])


def test_under_json_the_last_event_is_the_error(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(start_command, "start", boom)
    code, out, err = run(["gamer", "--json"], capsys)
    assert code == 70
    last = json.loads(out.splitlines()[-1])
    assert (last["event"], last["code"]) == ("error", 70)
    assert last["message"].startswith("internal error: RuntimeError: boom")
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["--version"], ["-V"], ["--help"], ["-h"]])
def test_version_and_help_load_no_click(argv: list[str]) -> None:
    code = ("import sys; from labhop.cli.main import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exit:\n"
            "    assert 'click' not in sys.modules and 'rich' not in sys.modules, "
            "sorted(sys.modules)\n    raise")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert ("labhop, version" in result.stdout) if argv[0] in ("-V", "--version") else (
        result.stdout.startswith("Usage: labhop [OPTIONS] HOST"))


@pytest.mark.parametrize(("argv", "line"), [
    (["help"], "'help' is not a command; did you mean: labhop --help"),
    (["list", "gamer"], "'list' is not a command; did you mean: labhop ls"),
    (["stpo", "gamer"], "'stpo' is not a command; did you mean: labhop stop"),
    (["./proj"], "'./proj' looks like a path, not a host; the host comes first"),
    (["~/proj/x.ipynb"], "'~/proj/x.ipynb' looks like a path, not a host"),
    (["gamer", "stop"], "did you mean: labhop stop gamer (the command comes first"),
])
def test_a_first_word_that_cannot_be_a_host_connects_nowhere(
        argv: list[str], line: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(proc, "run", boom)  # ssh -G would be the first process
    monkeypatch.setenv("HOME", "/nonexistent")  # no ssh config names these words
    code, _, err = run(argv, capsys)
    assert code == 2
    first, hint = err.splitlines()
    assert first.startswith(f"labhop: error: {line}"), first
    assert hint == "Try 'labhop --help' for help."


def test_a_host_of_the_ssh_config_is_a_host_whatever_its_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host list\n    HostName 127.0.0.1\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert front_door._known_host("list")
    assert registry.first_word_problem(["list"], front_door._known_host) is None
    assert registry.first_word_problem(["stpo"], front_door._known_host) is not None

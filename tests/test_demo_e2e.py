"""`scripts/dev demo` prints commands for a second terminal, and they work as printed: the
basic ones, the stand-in host's other aliases, and the test user's environments, each
ending as the banner says it does."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.labhop_cli import LabhopProcess, _child_env, _PipeReader
from tests.test_start_e2e import URL, wait_until_no_user_processes
from tests.testbed import ALIAS_VARIANTS, HOME

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
LABHOP = str(Path(sys.executable).parent / "labhop")


def start_demo(home: Path) -> LabhopProcess:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.testbed", "demo", "gpubox", "--dir", "~/proj",
         "--no-browser"], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env=_child_env({"HOME": str(home)}))
    assert process.stdout is not None
    changed = threading.Condition()
    reader = _PipeReader(process.stdout, changed)
    reader.start()
    return LabhopProcess(process, reader, changed)


def banner_tries(output: str) -> list[tuple[str, list[str]]]:
    """Each command the banner offers (a line of its own, indented by four spaces) as argv,
    with the line above it that says what it shows ("" under a heading)."""
    lines = output.splitlines()

    def what(above: str) -> str:
        return above.strip() if re.match(r"  \S", above) else ""

    return [(what(lines[index - 1]), shlex.split(line))
            for index, line in enumerate(lines) if line.startswith(f"    {LABHOP} ")]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=90,
                          check=False)


def check_failure(what: str, argv: list[str], status: int) -> None:
    """A failure the banner announces: that exit status, and labhop's one error line."""
    result = run(argv)
    assert result.returncode == status, (what, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("labhop: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr


def check_start(what: str, argv: list[str]) -> None:
    """A start the banner says works: it serves, and Ctrl+C stops it (exit 0)."""
    assert argv[0] == LABHOP
    with LabhopProcess.start(*argv[1:]) as started:
        started.wait_for(URL, timeout=120)
        started.interrupt()
        assert started.wait(60) == 0, (what, started.output)


def test_the_demo_says_how_to_reach_its_host_from_a_second_terminal(tmp_path: Path) -> None:
    stable = tmp_path / ".cache" / "labhop-demo" / "ssh_config"
    with start_demo(tmp_path) as demo:
        demo.wait_for(URL, timeout=120)
        tries = banner_tries(demo.output)
        basics = [argv for what, argv in tries if not what]
        assert [argv[1:] for argv in basics] == [
            [command, "-F", str(stable), "gpubox"] for command in ("ls", "logs", "gpus", "stop")]
        by_name = {argv[1]: argv for argv in basics}

        listed = run(by_name["ls"])
        assert listed.returncode == 0, listed.stderr
        assert "proj" in listed.stdout and "attached" in listed.stdout

        # Every other alias of the stand-in host, and every environment of its user.
        hosts = {argv[-1] for what, argv in tries if what and "--env" not in argv}
        assert {f"gpubox-{variant}" for variant in ALIAS_VARIANTS if variant} <= hosts
        envs = {argv[argv.index("--env") + 1] for _, argv in tries if "--env" in argv}
        conda_envs = {f"conda:{env.name}" for env in (HOME / "miniforge3" / "envs").iterdir()}
        assert conda_envs | {"venv:~/jvenv", "venv:~/emptyvenv"} <= envs
        for what, argv in tries:
            if not what:
                continue
            assert str(stable) in argv and argv[0] == LABHOP
            status = re.search(r": exit (\d+) \(", what)
            if status is not None:
                check_failure(what, argv, int(status[1]))
            elif what.endswith("it starts"):
                check_start(what, argv)
            else:  # the jump host's ls
                result = run(argv)
                assert result.returncode == 0, result.stderr
                assert "proj" in result.stdout

        stopped = run(by_name["stop"])
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped 'proj' on gpubox" in stopped.stderr + stopped.stdout
        # The labhop of the demo sees its server stop; the demo ends and tidies up.
        demo.wait_for(r"the stand-in host `gpubox` is stopped", timeout=60)
        demo.wait(30)
    assert not stable.exists()
    assert wait_until_no_user_processes() == []

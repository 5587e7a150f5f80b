"""`scripts/dev demo` prints commands for a second terminal, and they work as printed."""

from __future__ import annotations

import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.labhop_cli import LabhopProcess, _child_env, _PipeReader
from tests.test_start_e2e import URL, wait_until_no_user_processes

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


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


def test_the_demo_says_how_to_reach_its_host_from_a_second_terminal(tmp_path: Path) -> None:
    stable = tmp_path / ".cache" / "labhop-demo" / "ssh_config"
    with start_demo(tmp_path) as demo:
        demo.wait_for(URL, timeout=120)
        commands = [line.strip() for line in demo.output.splitlines()
                    if line.startswith(f"    {Path(sys.executable).parent / 'labhop'} ")]
        assert [shlex.split(line)[1:] for line in commands] == [
            [command, "-F", str(stable), "gpubox"] for command in ("ls", "logs", "gpus", "stop")]
        by_name = {shlex.split(line)[1]: shlex.split(line) for line in commands}

        listed = subprocess.run(by_name["ls"], cwd=ROOT, capture_output=True, text=True,
                                timeout=60, check=False)
        assert listed.returncode == 0, listed.stderr
        assert "proj" in listed.stdout and "attached" in listed.stdout
        stopped = subprocess.run(by_name["stop"], cwd=ROOT, capture_output=True, text=True,
                                 timeout=60, check=False)
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped 'proj' on gpubox" in stopped.stderr + stopped.stdout
        # The labhop of the demo sees its server stop; the demo ends and tidies up.
        demo.wait_for(r"the stand-in host `gpubox` is stopped", timeout=60)
        demo.wait(30)
    assert not stable.exists()
    assert wait_until_no_user_processes() == []

"""`--json` on start and attach end to end: the real CLI, the loopback sshd, a real Jupyter.

What an editor or a script sees: stdout carries JSON lines only, read here as labhop prints
them (progress first, then ready with the URL, last stopped or error); people's text goes
to stderr.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests import jupyter_api
from tests.labhop_cli import LabhopProcess, run_labhop
from tests.relay import Relay, write_flaky_config
from tests.test_start_e2e import STATE, URL, browser_env, start, wait_until_no_user_processes
from tests.testbed import USER, Sshd, user_processes

pytestmark = pytest.mark.e2e

READY = r'^\{"event": "ready", .*\}$'


def events(stdout: str) -> list[dict[str, Any]]:
    """Every line of stdout as the JSON object it must be (fails on any other line)."""
    lines = stdout.splitlines()
    assert stdout.endswith("\n"), stdout
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(event, dict) and "event" in event for event in parsed), stdout
    return parsed


def start_json(sshd: Sshd, *args: str, env: dict[str, str] | None = None) -> LabhopProcess:
    """`labhop HOST ... --json` or `labhop attach HOST ... --json`, stderr apart."""
    return LabhopProcess.start(args[0], "-F", str(sshd.config), *args[1:], "--json",
                               env_overrides=env, merge_stderr=False)


def ready_event(labhop: LabhopProcess, timeout: float = 90) -> dict[str, Any]:
    labhop.wait_for(READY, timeout=timeout)
    return next(e for e in events(labhop.output) if e["event"] == "ready")


def run_code_through(url: str) -> str:
    """Run code in a new kernel through the URL exactly as labhop gave it."""
    parts = urllib.parse.urlsplit(url)
    [token] = urllib.parse.parse_qs(parts.query)["token"]
    output, _ = jupyter_api.execute(f"{parts.scheme}://{parts.netloc}", token,
                                    "import getpass; print(getpass.getuser(), 6 * 7)")
    return output.strip()


def test_start_says_each_step_then_ready_then_stopped(sshd: Sshd, tmp_path: Path) -> None:
    # A desktop and a browser are there: --json must not open it anyway.
    opened = tmp_path / "opened"
    env = browser_env(tmp_path, f'echo "$1" > {opened}\n')
    with start_json(sshd, "gpubox", "--name", "proj", env=env) as labhop:
        ready = ready_event(labhop)
        before = events(labhop.output)
        steps = before[:before.index(ready)]
        assert steps[0] == {"event": "progress", "message": steps[0]["message"]}
        assert steps[0]["message"].startswith("connecting to gpubox")
        messages = [e["message"] for e in steps if e["event"] == "progress"]
        assert "starting JupyterLab as 'proj'" in messages
        assert "waiting for JupyterLab to answer" in messages

        pid = int((STATE / "proj" / "pid").read_text())
        assert set(ready) == {"event", "url", "port", "token", "host", "name", "pid", "app",
                              "server_url", "forwards", "time_left_s", "ends_at"}
        assert ready["forwards"] == []
        # A host's server has no walltime (a Slurm job's: test_slurm_e2e).
        assert (ready["time_left_s"], ready["ends_at"]) == (None, None)
        assert (ready["host"], ready["name"], ready["pid"], ready["app"]) == (
            "gpubox", "proj", pid, "lab")
        match = re.fullmatch(URL, ready["url"])
        assert match is not None, ready["url"]
        assert (int(match["port"]), match["token"]) == (ready["port"], ready["token"])
        assert run_code_through(ready["url"]) == f"{USER} 42"
        assert ready["server_url"] == f"http://127.0.0.1:{ready['port']}/?token={ready['token']}"
        assert run_code_through(ready["server_url"]) == f"{USER} 42"

        # The human text is all on stderr, the URL included.
        labhop.wait_for(r'"message": "Press Ctrl\+C to stop the server and its kernels\."')
        assert "JupyterLab is ready on gpubox" in labhop.stderr
        assert ready["url"] in labhop.stderr

        labhop.interrupt()
        assert labhop.wait(30) == 0, labhop.stderr
    final = events(labhop.output)
    assert final[-1] == {"event": "stopped", "name": "proj", "host": "gpubox",
                         "server_running": False}
    assert "stopped 'proj'" in labhop.stderr
    assert wait_until_no_user_processes() == []
    assert not opened.exists()


def test_an_error_is_the_last_line_with_the_exit_status(sshd: Sshd) -> None:
    result = run_labhop("-F", str(sshd.config), "gpubox", "--json", "--env",
                        "conda:nonexistent", timeout=90)
    assert result.rc == 20, result.stderr
    lines = events(result.stdout)
    assert lines[0]["event"] == "progress"
    last = lines[-1]
    assert (last["event"], last["code"]) == ("error", 20)
    assert "conda environment 'nonexistent' not found on gpubox" in last["message"]
    assert [e for e in lines if e["event"] == "error"] == [last]
    assert "labhop: error: conda environment 'nonexistent'" in result.stderr
    assert wait_until_no_user_processes() == []


def test_a_bad_option_is_an_error_event_too(sshd: Sshd) -> None:
    result = run_labhop("-F", str(sshd.config), "gpubox", "--json", "--idle-timeout", "soon")
    assert result.rc == 2
    [error] = events(result.stdout)
    assert error["event"] == "error" and error["code"] == 2
    assert "--idle-timeout" in error["message"]


def test_ctrl_c_before_ready_ends_with_an_error_event_130(sshd: Sshd) -> None:
    with start_json(sshd, "gpubox", "--name", "proj") as labhop:
        labhop.wait_for(r'"message": "waiting for JupyterLab to answer"', timeout=60)
        labhop.interrupt()
        assert labhop.wait(30) == 130, labhop.stderr
    last = events(labhop.output)[-1]
    assert last == {"event": "error", "message": "interrupted before the server was ready",
                    "code": 130}
    assert wait_until_no_user_processes() == []


def test_attach_to_a_kept_server(sshd: Sshd) -> None:
    with start(sshd, "gpubox", "--name", "proj", "--keep") as kept:
        url = kept.wait_for(URL, timeout=90)
        kept.interrupt()
        assert kept.wait(30) == 0, kept.output
    pid = int((STATE / "proj" / "pid").read_text())
    with start_json(sshd, "attach", "gpubox", "proj") as labhop:
        ready = ready_event(labhop, timeout=60)
        assert (ready["name"], ready["host"], ready["pid"]) == ("proj", "gpubox", pid)
        assert ready["token"] != url["token"]  # this labhop's own (see test_neighbour_e2e)
        assert run_code_through(ready["url"]) == f"{USER} 42"
        labhop.wait_for(r'"message": "Press Ctrl\+C to close the tunnel')
        labhop.interrupt()
        assert labhop.wait(30) == 0, labhop.stderr
    assert events(labhop.output)[-1] == {"event": "stopped", "name": "proj", "host": "gpubox",
                                         "server_running": True}
    assert any(p == pid for p, _ in user_processes())


def test_a_dropped_connection_is_reconnecting_then_reconnected(sshd: Sshd,
                                                               tmp_path: Path) -> None:
    with Relay.start(sshd.port) as relay:
        # Short keep-alives: the dead connection is noticed in seconds.
        config = write_flaky_config(sshd, relay, directory=tmp_path, options={
            "ServerAliveInterval": "1", "ServerAliveCountMax": "3"})
        with LabhopProcess.start("gpubox-flaky", "-F", str(config), "--name", "proj",
                                 "--json", merge_stderr=False) as labhop:
            ready = ready_event(labhop)
            relay.cut()
            labhop.wait_for(r'^\{"event": "reconnected", .*\}$', timeout=60)
            lines = events(labhop.output)
            kinds = [e["event"] for e in lines]
            assert kinds.index("ready") < kinds.index("reconnecting") < kinds.index("reconnected")
            assert lines[kinds.index("reconnecting")] == {"event": "reconnecting",
                                                          "host": "gpubox-flaky"}
            # The same port, so the same URL: an editor keeps the one it was given.
            assert lines[kinds.index("reconnected")] == {
                "event": "reconnected", "url": ready["url"], "port": ready["port"],
                "moved": False, "forwards": []}
            assert run_code_through(ready["url"]) == f"{USER} 42"
            labhop.interrupt()
            assert labhop.wait(30) == 0, labhop.stderr
        assert events(labhop.output)[-1]["event"] == "stopped"

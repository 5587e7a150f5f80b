"""A network that drops and comes back: the server and its kernels are never touched, the
same URL works again after the reconnect, and kernel state survives."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests import jupyter_api
from tests.labhop_cli import LabhopProcess
from tests.relay import Relay, write_flaky_config
from tests.test_start_e2e import URL, stop_with_ctrl_c
from tests.testbed import Sshd, user_processes

pytestmark = pytest.mark.e2e


def test_reconnects_on_the_same_port_and_keeps_kernel_state(sshd: Sshd, tmp_path: Path) -> None:
    with Relay.start(sshd.port) as relay:
        config = write_flaky_config(sshd, relay, directory=tmp_path)
        with LabhopProcess.start("-F", str(config), "gpubox-flaky", "--name", "proj",
                                 "--no-browser") as run:
            url = run.wait_for(URL, timeout=90)
            base = f"http://127.0.0.1:{url['port']}"
            _, kernel = jupyter_api.execute(base, url["token"], "x = 41")

            relay.pause()
            # labhop's keep-alive (10 s x 3) notices the dead connection, says so, and
            # keeps trying while the network is down.
            run.wait_for(r"lost the connection to gpubox-flaky", timeout=60)
            run.wait_for(r"reconnecting \(attempt 2\)", timeout=60)
            assert "reconnected" not in run.output

            relay.resume()
            restored = time.monotonic()
            run.wait_for(r"reconnected; .* works again", timeout=60)
            output, _ = jupyter_api.execute(base, url["token"], "x + 1", kernel_id=kernel)
            elapsed = time.monotonic() - restored
            assert output.strip() == "42"
            print(f"network restored -> kernel answered through the same URL in {elapsed:.1f} s")
            stop_with_ctrl_c(run)


def owner_sessions() -> list[tuple[int, str]]:
    """lhtest's long-lived script sessions on the host (the owner script is `sh -s`)."""
    return [(pid, cmd) for pid, cmd in user_processes() if cmd == "/bin/sh -s"]


def test_a_network_change_leaves_no_stale_owner_session_on_the_host(
        sshd: Sshd, tmp_path: Path) -> None:
    with Relay.start(sshd.port) as relay:
        # Short keep-alives, so the dead connection is noticed in seconds (labhop keeps a
        # ServerAliveInterval that the user's config already set lower than its own).
        config = write_flaky_config(sshd, relay, directory=tmp_path, options={
            "ServerAliveInterval": "1", "ServerAliveCountMax": "3"})
        with LabhopProcess.start("-F", str(config), "gpubox-flaky", "--name", "proj",
                                 "--no-browser") as run:
            url = run.wait_for(URL, timeout=90)
            base = f"http://127.0.0.1:{url['port']}"
            _, kernel = jupyter_api.execute(base, url["token"], "x = 41")
            [old_owner] = owner_sessions()

            # The laptop moves to another network: the old connection is dead, and its
            # FIN never reaches sshd, which keeps that session (and its owner script).
            relay.cut()
            run.wait_for(r"lost the connection to gpubox-flaky", timeout=60)
            run.wait_for(r"reconnected; .* works again", timeout=60)
            output, _ = jupyter_api.execute(base, url["token"], "x + 1", kernel_id=kernel)
            assert output.strip() == "42"
            # The reconnect ended the owner session it replaced.
            deadline = time.monotonic() + 10
            while old_owner in owner_sessions() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert old_owner not in owner_sessions()
            assert len(owner_sessions()) == 1
            run.interrupt()
            assert run.wait(30) == 0, run.output
        # stop leaves no process of that server on the host (only the dead connection's
        # sshd, which is sshd's own and waits for TCP to give up).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and [
                cmd for _, cmd in user_processes() if not cmd.startswith("sshd:")]:
            time.sleep(0.2)
        assert [cmd for _, cmd in user_processes() if not cmd.startswith("sshd:")] == []

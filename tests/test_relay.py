"""The flaky-network relay (tests/relay.py) against the real loopback sshd."""

from __future__ import annotations

import hashlib
import os
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.relay import Relay, write_flaky_config
from tests.testbed import USER, Sshd, user_processes

pytestmark = pytest.mark.e2e

ALIAS = "gpubox-flaky"
# Short keep-alives, so a cut network is noticed in about 3 s instead of 30.
FAST_KEEPALIVE = ("-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2")


@pytest.fixture
def relay(sshd: Sshd) -> Iterator[Relay]:
    with Relay.start(sshd.port) as running:
        yield running


@pytest.fixture
def flaky(sshd: Sshd, relay: Relay, tmp_path: Path) -> Path:
    return write_flaky_config(sshd, relay, ALIAS, directory=tmp_path)


def ssh(
    config: Path, *args: str, stdin: bytes = b"", timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["ssh", "-F", str(config), *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def start_ssh(config: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ssh", "-F", str(config), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def read_line(process: subprocess.Popen[bytes]) -> bytes:
    assert process.stdout is not None
    return process.stdout.readline()


def test_config_block_copies_the_host_and_goes_through_the_relay(
    sshd: Sshd, relay: Relay, flaky: Path
) -> None:
    text = flaky.read_text()
    assert text.startswith(sshd.config.read_text().rstrip())
    block = text.split(f"Host {ALIAS}\n", 1)[1]
    assert f"Port {relay.port}\n" in block
    assert f"HostKeyAlias [127.0.0.1]:{sshd.port}\n" in block
    assert "StrictHostKeyChecking yes\n" in block
    assert "BatchMode yes\n" in block


def test_a_login_and_bulk_data_pass_through_unchanged(flaky: Path) -> None:
    assert ssh(flaky, ALIAS, "true").returncode == 0
    payload = os.urandom(8 * 1024 * 1024)
    result = ssh(flaky, ALIAS, "sha256sum", stdin=payload)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0].decode() == hashlib.sha256(payload).hexdigest()


def _until_keepalive_gives_up(session: subprocess.Popen[bytes]) -> tuple[int, float, str]:
    """Wait for ssh to give up on a dead network: (exit status, seconds, its stderr)."""
    started = time.monotonic()
    rc = session.wait(timeout=15)
    waited = time.monotonic() - started
    assert session.stderr is not None
    return rc, waited, session.stderr.read().decode(errors="replace")


def test_keepalives_notice_a_pause_and_a_fresh_login_works_after_resume(
    relay: Relay, flaky: Path
) -> None:
    with start_ssh(flaky, *FAST_KEEPALIVE, ALIAS, "echo up; sleep 30") as session:
        assert read_line(session) == b"up\n"
        relay.pause()
        rc, waited, stderr = _until_keepalive_gives_up(session)
    assert rc == 255, stderr
    assert waited < 6, f"ssh noticed the cut only after {waited:.1f}s: {stderr}"
    assert "Timeout" in stderr
    relay.resume()
    assert ssh(flaky, ALIAS, "true").returncode == 0


def test_new_connections_hang_while_paused(relay: Relay, flaky: Path) -> None:
    relay.pause()
    started = time.monotonic()
    result = ssh(flaky, "-o", "ConnectTimeout=2", ALIAS, "true")
    waited = time.monotonic() - started
    assert result.returncode == 255
    # Accepted, but no banner: ssh waits for its ConnectTimeout, it is not refused.
    assert waited >= 1.5, result.stderr
    assert b"timed out" in result.stderr
    relay.resume()
    assert ssh(flaky, ALIAS, "true").returncode == 0


def test_a_short_pause_holds_bytes_and_the_session_carries_on(relay: Relay, flaky: Path) -> None:
    with start_ssh(flaky, ALIAS, "echo up; exec cat") as session:
        assert session.stdin is not None
        assert read_line(session) == b"up\n"
        relay.pause()
        session.stdin.write(b"sent while paused\n")
        session.stdin.flush()
        time.sleep(1)
        # Nothing may have crossed: the echo is still pending, the session still running.
        assert session.poll() is None
        assert _nothing_readable(session, 0.5)
        relay.resume()
        assert read_line(session) == b"sent while paused\n"
        session.stdin.close()
        assert session.wait(timeout=15) == 0


def _nothing_readable(process: subprocess.Popen[bytes], seconds: float) -> bool:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], seconds)
    return not ready


def test_a_cut_abandons_open_sessions_but_new_connections_work(relay: Relay, flaky: Path) -> None:
    with start_ssh(flaky, *FAST_KEEPALIVE, ALIAS, "echo up; sleep 300") as session:
        assert read_line(session) == b"up\n"
        _wait_for_remote_command("sleep 300")
        assert relay.cut() == 1
        rc, waited, stderr = _until_keepalive_gives_up(session)
    assert rc == 255, stderr
    assert waited < 6, f"ssh noticed the cut only after {waited:.1f}s: {stderr}"
    assert "Timeout" in stderr
    # A new connection works at once, unlike after a pause; no resume() needed.
    fresh = ssh(flaky, ALIAS, "true", timeout=10)
    assert fresh.returncode == 0, fresh.stderr
    # The client's FIN never reached sshd: the old session and its command live on. The
    # sshd session process is the proof: a tty-less `sleep` would outlive a session that
    # sshd closed too (nothing sends it SIGHUP).
    time.sleep(1)
    assert _remote_commands("sleep 300"), user_processes()
    assert _remote_commands(f"sshd: {USER}@notty"), user_processes()
    assert not relay.paused


def _remote_commands(cmdline: str) -> list[int]:
    return [pid for pid, found in user_processes() if found == cmdline]


def _wait_for_remote_command(cmdline: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not _remote_commands(cmdline):
        assert time.monotonic() < deadline, f"no {cmdline!r} among {user_processes()}"
        time.sleep(0.05)

"""Each labhop attached to a server holds a session of its own on the host (owner.sh): its
record, its client for `ls`, and the browser token it gave out, which opens the server
exactly as long as the session lasts. Run in sh against a stand-in server."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labhop import model
from labhop.remote import protocol, scripts
from tests.unit.test_remote_scripts import fake_venv, launch_script, list_script, request, run_sh

SESSION_A, SESSION_B = "a" * 16, "b" * 16
TOKEN_A, TOKEN_B = "1" * 48, "2" * 48


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Path]:
    """A running stand-in server whose private config takes browser tokens: its state."""
    fake_venv(tmp_path / "env", with_jupyter=True)
    launched = run_sh(launch_script(request(env=model.EnvSpec("venv", "~/env"))), tmp_path)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    state = tmp_path / ".local/state/labhop/servers/proj"
    (state / "auth").write_text("sessions\n")  # what sh/server_config.py writes
    yield state
    run_sh(scripts.stop_script("proj"), tmp_path)


def hold(home: Path, session: str, token: str, client: str) -> subprocess.Popen[str]:
    """An owner session, as a labhop holds it; returns once the host confirmed it."""
    child = subprocess.Popen(["sh", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, cwd=home, env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(scripts.owner_script("proj", client, session, token).text)
    child.stdin.flush()
    for line in child.stdout:
        if line.strip() == f"labhop:held={session}":
            return child
    raise AssertionError(f"no session: exit {child.wait()}")


def release(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.close()
    child.wait(timeout=10)


def token_file(state: Path, token: str) -> Path:
    return state / "tokens" / hashlib.sha256(token.encode()).hexdigest()[:32]


def clients(home: Path) -> str:
    [entry], _ = protocol.parse_entries(run_sh(list_script(with_kernels=False), home).stdout)
    return entry.owner


def test_each_labhop_has_its_own_session_and_token(server: Path) -> None:
    home = server.parents[4]
    first = hold(home, SESSION_A, TOKEN_A, "ana@laptop pid 1")
    second = hold(home, SESSION_B, TOKEN_B, "ben@desk pid 2")
    try:
        assert token_file(server, TOKEN_A).read_text() == TOKEN_A
        assert token_file(server, TOKEN_B).read_text() == TOKEN_B
        assert oct(token_file(server, TOKEN_A).stat().st_mode & 0o777) == "0o600"
        assert clients(home) == "ana@laptop pid 1\nben@desk pid 2"
        # The second labhop leaves: the first stays attached, its token still opens.
        release(second)
        assert not token_file(server, TOKEN_B).exists()
        assert token_file(server, TOKEN_A).exists()
        assert clients(home) == "ana@laptop pid 1"
        assert first.poll() is None
    finally:
        release(first)
    assert not token_file(server, TOKEN_A).exists()
    assert clients(home) == ""


def test_a_reconnect_replaces_only_its_own_session(server: Path) -> None:
    """After a network drop the old session lingers on the host (sshd never heard): the
    same labhop's new one ends it and withdraws its token; another labhop's stays."""
    home = server.parents[4]
    stale = hold(home, SESSION_A, TOKEN_A, "ana@laptop pid 1")
    other = hold(home, SESSION_B, TOKEN_B, "ben@desk pid 2")
    try:
        withdrawn = hold(home, SESSION_A, "", "ana@laptop pid 1")
        assert stale.wait(timeout=10) is not None  # ended by the host
        assert not token_file(server, TOKEN_A).exists()
        assert token_file(server, TOKEN_B).exists() and other.poll() is None
        moved = "3" * 48
        again = hold(home, SESSION_A, moved, "ana@laptop pid 1")
        assert withdrawn.wait(timeout=10) is not None
        assert token_file(server, moved).exists()
        assert not token_file(server, TOKEN_A).exists()
        release(again)
    finally:
        release(other)


def test_a_session_that_vanished_loses_its_token_at_the_next_look(server: Path) -> None:
    home = server.parents[4]
    gone = hold(home, SESSION_A, TOKEN_A, "ana@laptop pid 1")
    gone.kill()  # no EOF, no cleanup: as if the host killed it
    gone.wait()
    time.sleep(0.1)
    assert token_file(server, TOKEN_A).exists()
    assert clients(home) == ""
    assert not token_file(server, TOKEN_A).exists()
    assert list((server / "owners").iterdir()) == []


def test_a_server_without_browser_tokens_gets_none_written(server: Path) -> None:
    (server / "auth").unlink()  # Notebook 6, jupyter_server 1: no IdentityProvider
    home = server.parents[4]
    child = subprocess.Popen(["sh", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, cwd=home, env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(scripts.owner_script("proj", "c", SESSION_A, TOKEN_A).text)
    child.stdin.flush()
    lines = []
    for line in child.stdout:
        lines.append(line.strip())
        if line.startswith("labhop:held="):
            break
    assert "labhop:tokens=0" in lines
    assert not token_file(server, TOKEN_A).exists()
    release(child)


def test_stop_ends_every_session_and_token(server: Path) -> None:
    home = server.parents[4]
    first = hold(home, SESSION_A, TOKEN_A, "a")
    second = hold(home, SESSION_B, TOKEN_B, "b")
    stopped = run_sh(scripts.stop_script("proj"), home)
    assert protocol.parse_output(stopped.stdout, protocol.STOP_KEYS).get("stopped") == "1"
    assert first.wait(timeout=10) is not None and second.wait(timeout=10) is not None
    assert not server.exists()

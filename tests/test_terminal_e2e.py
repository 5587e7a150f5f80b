"""What the remote prints never drives the laptop's terminal: folder names and log lines
that carry escape sequences (a clipboard write, a title change) reach a terminal escaped,
through `labhop ls` and `labhop logs`; `logs --raw` and --json keep the original text.

labhop runs on a real pseudo-terminal here (that is where escaping applies), against the
loopback sshd and a real Jupyter."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest

from tests.labhop_cli import run_labhop
from tests.test_json_e2e import run_code_through
from tests.test_servers_e2e import start_kept
from tests.test_start_e2e import URL, start, wait_until_no_user_processes
from tests.testbed import HOME, USER, Sshd

pytestmark = pytest.mark.e2e

# A folder name with an OSC 52 clipboard write and an OSC 0 title change in it.
HOSTILE = "proj\x1b]52;c;cHduZWQ=\x07\x1b]0;pwned\x07"


def on_a_terminal(sshd: Sshd, *args: str, timeout: float = 60) -> tuple[int, bytes]:
    """Run labhop ARGS with stdout and stderr on a pseudo-terminal; (status, all it wrote)."""
    parent, child = pty.openpty()
    env = {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "labhop", args[0], "-F",
                                str(sshd.config), *args[1:]],
                               stdin=subprocess.DEVNULL, stdout=child, stderr=child, env=env,
                               start_new_session=True)
    os.close(child)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([parent], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(parent, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        return process.wait(10), output
    finally:
        os.close(parent)
        if process.poll() is None:
            process.kill()


def test_an_escape_sequence_in_a_folder_name_reaches_the_terminal_escaped(sshd: Sshd) -> None:
    root = HOME / HOSTILE
    subprocess.run(["runuser", "-u", USER, "--", "mkdir", "-p", str(root)], check=True)
    start_kept(sshd, "hostile", "--dir", str(root), "--env", "venv:~/jvenv")

    status, shown = on_a_terminal(sshd, "ls", "gpubox")
    assert status == 0, shown
    assert b"\x1b" not in shown and b"\x07" not in shown, shown
    assert b"proj\\x1b]52;c;cHduZWQ=\\x07\\x1b]0;pwned\\x07" in shown, shown

    status, shown = on_a_terminal(sshd, "logs", "gpubox", "hostile", "-n", "200")
    assert status == 0, shown
    assert b"\x1b" not in shown and b"\x07" not in shown, shown
    assert b"\\x1b]52;c;" in shown, shown  # Jupyter logs the root it serves

    # Raw, when asked for; and --json carries the original text, escaped as JSON.
    status, raw = on_a_terminal(sshd, "logs", "gpubox", "hostile", "-n", "200", "--raw")
    assert status == 0 and b"\x1b]52;c;" in raw
    listed = run_labhop("ls", "-F", str(sshd.config), "gpubox", "--json")
    assert listed.rc == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert entry["root_dir"] == str(root)

    stopped = run_labhop("stop", "-F", str(sshd.config), "gpubox", "hostile")
    assert stopped.rc == 0, stopped.stderr


NOISE = ("\n# labhop test: a login file that prints what looks like labhop's own lines\n"
         "echo 'labhop:token=forged'\necho 'labhop:endpoint=tcp:127.0.0.1:1'\n"
         "echo 'labhop:open_path=../../etc'\necho 'Welcome to gpubox'\n")


def test_a_noisy_login_file_neither_breaks_a_start_nor_forges_a_value(sshd: Sshd) -> None:
    """Everything a login file prints comes before the script's run marker, so it is never
    read as the script's: the start works, with the real token and socket."""
    profile = HOME / ".profile"
    original = profile.read_bytes()
    try:
        profile.write_bytes(original + NOISE.encode())
        with start(sshd, "gpubox", "--name", "noisy") as run:
            url = run.wait_for(URL, timeout=90)
            assert len(url["token"]) == 48  # not the "forged" one
            assert url["path"] == "/lab", run.output
            assert run_code_through(f"http://127.0.0.1:{url['port']}/?token={url['token']}"
                                    ) == f"{USER} 42"
            run.interrupt()
            assert run.wait(30) == 0, run.output
    finally:
        profile.write_bytes(original)
    assert wait_until_no_user_processes() == []

"""A neighbour cannot stop your work (issue 17, finding 3): another local user floods the
forwarded port of one session until the shared master has no file descriptor left.

Two sessions on one host share one master whose open-file limit is 1024 (soft and hard, a
common desktop default, so labhop cannot raise it). A second unprivileged local user opens
1,500 connections to session a's local port and holds them: the master's descriptors run
out, and `ssh -O check` hangs. labhop must report that and wait it out: no session stops,
`ls` says one line (or lists), and afterwards both servers, and the kernels started before,
are as they were. Real CLI, real sshd, real Jupyter, a real second user.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests import jupyter_api
from tests.labhop_cli import LabhopProcess, Result, run_labhop
from tests.test_connection_e2e import wait_until
from tests.testbed import Sshd, processes_with_in_cmdline

pytestmark = pytest.mark.e2e

NEIGHBOUR = "lhneighbour"
# The victim's master gets this limit, soft and hard: it cannot raise its way out.
MASTER_NOFILE = 1024
FLOOD_CONNECTIONS = 1500
# Enough descriptors for the neighbour's own 1,500 sockets.
NEIGHBOUR_NOFILE = 4096
# The master counts as exhausted with this many descriptors open (1024 less a few that a
# connection being accepted and closed again may free for a moment).
EXHAUSTED_FDS = MASTER_NOFILE - 8
READY = r'^\{"event": "ready", .*\}$'

# Run by the neighbour (as lhneighbour, with python3's standard library only): open COUNT
# connections to 127.0.0.1:PORT, all at once, and send a byte on each: a connection that
# completed on a SYN cookie while the listener's queue was full exists only for the client
# until its first data arrives, which the kernel then resends until the listener takes it.
# Say how many, hold them until stdin closes, then let go.
FLOOD_SCRIPT = """\
import resource, select, socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = {}
for _ in range(count):
    sock = socket.socket()
    sock.setblocking(False)
    sock.connect_ex(("127.0.0.1", port))
    held[sock.fileno()] = sock
poll, waiting = select.poll(), set(held)
for fd in waiting:
    poll.register(fd, select.POLLOUT)
deadline = time.monotonic() + 20
while waiting and time.monotonic() < deadline:
    for fd, _ in poll.poll(1000):
        poll.unregister(fd)
        waiting.discard(fd)
        try:
            held[fd].send(b"G")
        except OSError:
            pass
print("holding", len(held) - len(waiting), flush=True)
sys.stdin.read()
for sock in held.values():
    sock.close()
print("released", flush=True)
"""


def nofile(limit: int) -> list[str]:
    """A command prefix that runs the rest with this open-file limit, soft and hard (it
    execs it: same PID, and every child it spawns, labhop's master included, inherits it)."""
    return ["prlimit", f"--nofile={limit}:{limit}", "--"]


@pytest.fixture
def neighbour_script() -> Iterator[Path]:
    """The flood script where the neighbour (no home, no shell) can read it."""
    try:
        pwd.getpwnam(NEIGHBOUR)
    except KeyError:
        pytest.skip(f"no local user {NEIGHBOUR}: run `sudo scripts/dev setup`")
    if os.geteuid() != 0:
        pytest.skip("running as another local user needs root")
    directory = Path(tempfile.mkdtemp(prefix="lhflood-"))
    try:
        directory.chmod(0o755)
        script = directory / "flood.py"
        script.write_text(FLOOD_SCRIPT)
        script.chmod(0o644)
        yield script
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class Flood:
    """The neighbour's flood as a process: holding once `holding N` is printed, let go
    when `release()` closes its stdin."""

    def __init__(self, script: Path, port: int) -> None:
        # Root gives the neighbour a hard limit high enough for the flood, then runuser
        # drops to that user, who raises the soft limit itself.
        self.process = subprocess.Popen(
            [*nofile(NEIGHBOUR_NOFILE), "runuser", "-u", NEIGHBOUR, "--", "/usr/bin/python3",
             str(script), str(port), str(FLOOD_CONNECTIONS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        assert self.process.stdout is not None
        self._stdout: IO[str] = self.process.stdout

    def held(self, timeout: float = 30) -> int:
        """How many connections the neighbour holds (all of them attempted)."""
        line = _read_line(self._stdout, timeout)
        assert line.startswith("holding "), (line, self._stderr())
        return int(line.split()[1])

    def release(self) -> None:
        assert self.process.stdin is not None
        if not self.process.stdin.closed:
            self.process.stdin.close()
        assert _read_line(self._stdout, 30) == "released", self._stderr()
        assert self.process.wait(10) == 0, self._stderr()

    def kill(self) -> None:
        """However the test ended: the neighbour's python (runuser's child, in the group
        runuser leads) lets go, and is killed if it does not."""
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def _stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read()


def _read_line(stream: IO[str], timeout: float) -> str:
    """One line from a pipe, or an AssertionError after `timeout`."""
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert found, f"no line within {timeout:g} s"
    return found[0].strip()


def events(session: LabhopProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in session.output.splitlines()]


def kinds(session: LabhopProcess) -> list[str]:
    return [event["event"] for event in events(session)]


def ready(session: LabhopProcess) -> dict[str, Any]:
    session.wait_for(READY, timeout=90)
    return next(event for event in events(session) if event["event"] == "ready")


def master_pid(runtime: Path) -> int:
    [pid] = [pid for pid, cmdline in processes_with_in_cmdline(str(runtime))
             if " -M " in f" {cmdline} "]
    return pid


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def master_answers(runtime: Path, timeout: float) -> bool:
    """Whether `ssh -O check` on labhop's shared master answers within `timeout`."""
    [control] = [path for path in (runtime / "labhop").iterdir()
                 if path.is_socket()]
    try:
        result = subprocess.run(["ssh", "-F", os.devnull, "-S", str(control), "-O", "check",
                                 "--", "gpubox"], capture_output=True, text=True,
                                timeout=timeout, check=False, start_new_session=True)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def ls(sshd: Sshd, timeout: float = 60) -> Result:
    return run_labhop("ls", "-F", str(sshd.config), "gpubox", timeout=timeout)


def attached(listing: str, name: str) -> bool:
    return any(line.split()[:1] == [name] and "attached" in line
               for line in listing.splitlines())


def test_a_neighbours_flood_stops_no_session_and_no_kernel(
        sshd: Sshd, neighbour_script: Path, runtime_dir: Path) -> None:
    def session(name: str) -> LabhopProcess:
        return LabhopProcess.start("-F", str(sshd.config), "gpubox", "--name", name,
                                   "--no-browser", "--json", merge_stderr=False,
                                   wrapper=nofile(MASTER_NOFILE))

    # a first, alone: it opens the master (with its limit), b joins that master.
    with session("a") as a:
        ready_a = ready(a)
        with session("b") as b:
            ready_b = ready(b)
            pid = master_pid(runtime_dir)
            assert resource.prlimit(pid, resource.RLIMIT_NOFILE) == (
                MASTER_NOFILE, MASTER_NOFILE)
            kernels = {}
            for name, event in (("a", ready_a), ("b", ready_b)):
                base = f"http://127.0.0.1:{event['port']}"
                output, kernel = jupyter_api.execute(
                    base, event["token"], f"before = {name!r} * 2; print(before)")
                assert output.strip() == name * 2
                kernels[name] = (base, event["token"], kernel)

            flood = Flood(neighbour_script, ready_a["port"])
            try:
                assert flood.held() == FLOOD_CONNECTIONS
                # The attack is real: the master has no descriptor left and does not
                # answer its control socket.
                assert wait_until(lambda: open_fds(pid) >= EXHAUSTED_FDS, 15), open_fds(pid)
                assert not master_answers(runtime_dir, timeout=5)

                # ls under the flood: one line and a code, or the list; never a traceback.
                started = time.monotonic()
                flooded = ls(sshd)
                took = time.monotonic() - started
                assert "Traceback" not in flooded.stderr, flooded.stderr
                if flooded.rc == 0:
                    assert attached(flooded.stdout, "a") and attached(flooded.stdout, "b"), (
                        flooded)
                else:
                    # 70 is the front door's catch-all: a bug, however short its line.
                    assert flooded.rc != 70, flooded.stderr
                    assert len(flooded.stderr.splitlines()) <= 1, flooded.stderr
                    assert flooded.stderr.startswith("labhop: "), flooded.stderr
                # Still flooded while ls ran: what it met was the flood.
                assert open_fds(pid) >= EXHAUSTED_FDS

                # Each session says the connection does not answer, and waits.
                for victim in (a, b):
                    victim.wait_for(r'^\{"event": "busy", ', timeout=30)
                flood.release()
            finally:
                flood.kill()

            # Back to normal: each session says so and has never stopped.
            for victim in (a, b):
                victim.wait_for(r'^\{"event": "answering", ', timeout=30)
                assert victim.running(), victim.stderr
                assert not {"stopped", "error"} & set(kinds(victim)), victim.output
            assert master_pid(runtime_dir) == pid
            listing = ls(sshd)
            assert listing.rc == 0, listing.stderr
            assert attached(listing.stdout, "a") and attached(listing.stdout, "b"), listing
            # The kernels from before the flood: same id, same variables.
            for name, (base, token, kernel) in kernels.items():
                assert [k["id"] for k in jupyter_api.list_kernels(base, token)] == [kernel]
                output, _ = jupyter_api.execute(base, token, "print(before)",
                                                kernel_id=kernel)
                assert output.strip() == name * 2
            print(f"ls under the flood: rc {flooded.rc} after {took:.1f} s")

            b.interrupt()
            assert b.wait(30) == 0, b.stderr
        a.interrupt()
        assert a.wait(30) == 0, a.stderr
    for victim in (a, b):
        assert kinds(victim)[-1] == "stopped", victim.output

"""One connection per host, shared by every labhop command: a host that asks for a password
at every login asks once, one labhop never breaks another, and no command leaves anything
behind, on the laptop or on the host. Real CLI, real sshd, real Jupyter."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import jupyter_api
from tests.labhop_cli import LabhopProcess, Result, run_labhop
from tests.test_gpus_e2e import nvidia_smi  # noqa: F401 -- the fixture
from tests.test_start_e2e import URL, wait_until_no_user_processes
from tests.testbed import Askpass, Sshd, processes_with_in_cmdline, user_processes

pytestmark = pytest.mark.e2e


def wait_until(condition: Callable[[], object], timeout: float = 15) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def laptop_leftovers(runtime: Path) -> list[str]:
    """What labhop left on the laptop: processes of its runtime directory (masters, guards,
    tunnels) and anything there, the lock files of its shared masters included."""
    found = [f"process {pid}: {cmdline}" for pid, cmdline in processes_with_in_cmdline(
        str(runtime)) if "pytest" not in cmdline]
    shared = runtime / "labhop"
    if shared.is_dir():
        found += [f"file {entry.name}" for entry in shared.iterdir()]
    return found


def no_laptop_leftovers(runtime: Path) -> list[str]:
    """What is still left after a few seconds (cleanup may take a moment)."""
    wait_until(lambda: not laptop_leftovers(runtime))
    return laptop_leftovers(runtime)


def masters(runtime: Path) -> list[str]:
    return [cmdline for _, cmdline in processes_with_in_cmdline(str(runtime))
            if " -M " in f" {cmdline} "]


def ssh_processes(config: str) -> list[tuple[int, str]]:
    """The ssh clients that read `config` (this test's; the suite's other worker has its
    own sshd and config, and its masters beside ours)."""
    return [(pid, cmdline) for pid, cmdline in processes_with_in_cmdline(config)
            if cmdline.split()[0] in ("ssh", "/usr/bin/ssh")]


# ---------------------------------------------------------------------------------------
# A host that asks at every login
def password_config(sshd: Sshd, directory: Path, *extra_lines: str) -> Path:
    """The password host's client config, plus lines for its Host block."""
    config = directory / "pw_config"
    text = sshd.config.read_text().rstrip("\n") + "\n"
    config.write_text(text + "".join(f"    {line}\n" for line in extra_lines))
    return config


def pw(config: Path, askpass: Askpass, *args: str, timeout: float = 60) -> Result:
    return run_labhop(args[0], "-F", str(config), *args[1:], timeout=timeout,
                      env_overrides=askpass.env())


def start_ls_logs_stop(config: Path, askpass: Askpass) -> None:
    with LabhopProcess.start("-F", str(config), "pwbox", "--name", "pw", "--no-browser",
                             env_overrides=askpass.env()) as session:
        url = session.wait_for(URL, timeout=90)
        base = f"http://127.0.0.1:{url['port']}"
        output, _ = jupyter_api.execute(base, url["token"], "print(6 * 7)")
        assert output.strip() == "42"
        listed = pw(config, askpass, "ls", "pwbox")
        assert listed.rc == 0, listed.stderr
        assert "pw" in listed.stdout and "attached" in listed.stdout
        logs = pw(config, askpass, "logs", "pwbox", "pw")
        assert logs.rc == 0 and "is running at" in logs.stdout, logs.stderr
        stopped = pw(config, askpass, "stop", "pwbox", "pw")
        assert stopped.rc == 0, stopped.stderr
        assert "stopped 'pw' on pwbox" in stopped.stderr
        session.interrupt()
        session.wait(30)


def test_a_password_host_asks_once_for_start_ls_logs_and_stop(
        password_sshd: Sshd, askpass: Askpass, tmp_path: Path, runtime_dir: Path) -> None:
    config = password_config(password_sshd, tmp_path)
    start_ls_logs_stop(config, askpass)
    assert askpass.count() == 1, askpass.prompts()
    assert no_laptop_leftovers(runtime_dir) == []
    assert wait_until_no_user_processes() == []


def test_a_live_master_of_the_user_is_used_and_left_alive(
        password_sshd: Sshd, askpass: Askpass, tmp_path: Path, runtime_dir: Path) -> None:
    # Short, like ~/.ssh/cm-%C: a ControlPath must fit in a Unix socket address.
    control = Path(tempfile.mkdtemp(prefix="lhu-")) / "cm-%C"
    config = password_config(password_sshd, tmp_path, "ControlMaster auto",
                             f"ControlPath {control}", "ControlPersist 120")
    # The user's own master, as `ssh pwbox` with this config leaves it: one prompt.
    master = subprocess.run(["ssh", "-F", str(config), "-f", "-N", "pwbox"],
                            env={**os.environ, **askpass.env()}, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=30,
                            start_new_session=True, check=False)
    assert master.returncode == 0, master.stderr
    assert askpass.count() == 1
    check = ["ssh", "-F", str(config), "-O", "check", "pwbox"]
    try:
        start_ls_logs_stop(config, askpass)
        assert askpass.count() == 1, askpass.prompts()  # labhop asked for nothing
        assert masters(runtime_dir) == []  # and opened no master of its own
        alive = subprocess.run(check, capture_output=True, text=True, timeout=15, check=False)
        assert alive.returncode == 0, alive.stderr
    finally:
        subprocess.run(["ssh", "-F", str(config), "-O", "exit", "pwbox"],
                       capture_output=True, timeout=15, check=False)
        shutil.rmtree(control.parent, ignore_errors=True)
    assert no_laptop_leftovers(runtime_dir) == []


def test_persist_keeps_the_connection_for_later_commands(
        password_sshd: Sshd, askpass: Askpass, tmp_path: Path, runtime_dir: Path) -> None:
    config = password_config(password_sshd, tmp_path)
    first = pw(config, askpass, "ls", "pwbox", "--persist", "2m")
    assert first.rc == 0, first.stderr
    assert askpass.count() == 1
    # That labhop has exited; its connection stays, so the next command asks nothing.
    [master] = masters(runtime_dir)
    assert "ControlPersist=120s" in master
    later = pw(config, askpass, "ls", "pwbox")
    assert later.rc == 0, later.stderr
    assert askpass.count() == 1, askpass.prompts()
    # Without --persist the last labhop out closes a master opened with --persist 0 only;
    # this one is left to ssh's ControlPersist. End it as a user would.
    [socket_path] = [entry for entry in (runtime_dir / "labhop").iterdir()
                     if stat.S_ISSOCK(entry.lstat().st_mode)]
    subprocess.run(["ssh", "-F", os.devnull, "-S", str(socket_path), "-O", "exit", "x"],
                   capture_output=True, timeout=15, check=False)
    wait_until(lambda: not masters(runtime_dir) and not socket_path.exists())
    assert masters(runtime_dir) == []
    assert not socket_path.exists()


# ---------------------------------------------------------------------------------------
# Several labhops on one host
def test_ctrl_c_of_one_of_two_labhops_leaves_the_other_working(
        sshd: Sshd, runtime_dir: Path) -> None:
    config = str(sshd.config)
    with (LabhopProcess.start("-F", config, "gpubox", "--name", "one", "--no-browser") as one,
          LabhopProcess.start("-F", config, "gpubox", "--name", "two", "--no-browser") as two):
        url_one = one.wait_for(URL, timeout=90)
        url_two = two.wait_for(URL, timeout=90)
        assert url_one["port"] != url_two["port"]
        assert len(masters(runtime_dir)) == 1, masters(runtime_dir)
        base_two = f"http://127.0.0.1:{url_two['port']}"
        _, kernel = jupyter_api.execute(base_two, url_two["token"], "x = 41")

        one.interrupt()
        assert one.wait(30) == 0, one.output
        assert "stopped 'one'" in one.output

        output, _ = jupyter_api.execute(base_two, url_two["token"], "x + 1", kernel_id=kernel)
        assert output.strip() == "42"
        follow = LabhopProcess.start("logs", "-F", config, "gpubox", "two", "-f")
        with follow:
            follow.wait_for(r"is running at", timeout=30)
            # kill -9 of a labhop ends only what it started: the session and its tunnel
            # keep working, and so does the log that follows along.
            one_more = LabhopProcess.start("-F", config, "gpubox", "--name", "three",
                                           "--no-browser", "--keep")
            with one_more:
                one_more.wait_for(URL, timeout=90)
                one_more.kill()
                one_more.wait(10)
            output, _ = jupyter_api.execute(base_two, url_two["token"], "x + 2",
                                            kernel_id=kernel)
            assert output.strip() == "43"
            assert follow.running(), follow.output
            follow.interrupt()
            assert follow.wait(15) == 0, follow.output
        two.interrupt()
        assert two.wait(30) == 0, two.output
    stopped = run_labhop("stop", "-F", config, "gpubox", "three")
    assert stopped.rc == 0, stopped.stderr
    assert no_laptop_leftovers(runtime_dir) == []
    assert wait_until_no_user_processes() == []


@pytest.fixture
def kept_server(sshd: Sshd) -> Iterator[str]:
    """A server left running with --keep, for commands that need one."""
    with LabhopProcess.start("-F", str(sshd.config), "gpubox", "--name", "kept",
                             "--no-browser", "--keep") as run:
        run.wait_for(URL, timeout=90)
        run.interrupt()
        assert run.wait(30) == 0, run.output
    yield "kept"
    run_labhop("stop", "-F", str(sshd.config), "gpubox", "kept")


def remote_helpers_of(pids_before: set[int]) -> list[tuple[int, str]]:
    """lhtest's processes that were not there before (a tail, a cat, an sh)."""
    return [(pid, cmd) for pid, cmd in user_processes() if pid not in pids_before]


@pytest.mark.parametrize("how", [signal.SIGHUP, signal.SIGKILL], ids=["hangup", "kill-9"])
def test_a_hangup_or_kill_of_logs_follow_leaves_nothing(
        sshd: Sshd, kept_server: str, runtime_dir: Path, how: signal.Signals) -> None:
    before = {pid for pid, _ in user_processes()}
    with LabhopProcess.start("logs", "-F", str(sshd.config), "gpubox", kept_server,
                             "-f") as follow:
        follow.wait_for(r"is running at", timeout=30)
        assert any("tail" in cmd for _, cmd in remote_helpers_of(before))
        os.kill(follow.pid, how)
        follow.wait(15)
    assert no_laptop_leftovers(runtime_dir) == []
    wait_until(lambda: not remote_helpers_of(before))
    assert remote_helpers_of(before) == []


@pytest.mark.parametrize("how", [signal.SIGHUP, signal.SIGKILL], ids=["hangup", "kill-9"])
def test_a_hangup_or_kill_of_gpus_watch_leaves_nothing(
        sshd: Sshd, nvidia_smi: Callable[..., None],  # noqa: F811 -- the fixture
        runtime_dir: Path, how: signal.Signals) -> None:
    nvidia_smi("t4-idle")
    with LabhopProcess.start("gpus", "-F", str(sshd.config), "gpubox", "--watch") as watch:
        watch.wait_for(r"Tesla T4", timeout=30)
        os.kill(watch.pid, how)
        watch.wait(15)
    assert no_laptop_leftovers(runtime_dir) == []
    assert wait_until_no_user_processes() == []


# ---------------------------------------------------------------------------------------
# The token goes only where labhop's own ssh listens
class Squatter:
    """Another local program that takes a port and records every byte sent to it,
    answering like Jupyter would, to lure a token out."""

    def __init__(self, port: int) -> None:
        self.received = bytearray()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 5
        while True:
            try:
                self.sock.bind(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    self.received += conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


def test_a_port_taken_while_the_connection_is_down_never_sees_the_token(
        sshd: Sshd, runtime_dir: Path) -> None:
    with LabhopProcess.start("-F", str(sshd.config), "gpubox", "--name", "proj",
                             "--no-browser") as run:
        url = run.wait_for(URL, timeout=90)
        port, token = int(url["port"]), url["token"]
        # The network dies and every ssh of the laptop with it; another local user's
        # program grabs the tunnel's port at once.
        for pid, _ in processes_with_in_cmdline(str(runtime_dir)):
            with contextlib.suppress(ProcessLookupError):
                if "labhop.ssh.guard" not in _cmdline(pid):
                    os.kill(pid, signal.SIGKILL)
        squatter = Squatter(port)
        try:
            moved = run.wait_for(r"moved to (\d+)", timeout=60)
            new = run.wait_for(
                rf"reconnected; http://127\.0\.0\.1:{moved[1]}/lab\?token=([0-9a-f]{{48}}) "
                "works again", timeout=60)
            # A new token went out with the new port; the one the old port had opens nothing.
            assert new[1] != token
            base = f"http://127.0.0.1:{moved[1]}"
            output, _ = jupyter_api.execute(base, new[1], "1 + 1")
            assert output.strip() == "2"
            with pytest.raises(urllib.error.HTTPError) as refused:
                jupyter_api.api_status(base, token)
            assert refused.value.code == 403
            run.interrupt()
            assert run.wait(30) == 0, run.output
            assert "stopped 'proj'" in run.output
        finally:
            squatter.close()
        assert token.encode() not in bytes(squatter.received)
    assert no_laptop_leftovers(runtime_dir) == []
    assert wait_until_no_user_processes() == []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------
def test_no_multiplex_starts_lists_and_stops_without_a_master(
        sshd: Sshd, runtime_dir: Path) -> None:
    config = str(sshd.config)
    with LabhopProcess.start("-F", config, "gpubox", "--name", "direct", "--no-browser",
                             "--no-multiplex") as run:
        url = run.wait_for(URL, timeout=90)
        output, _ = jupyter_api.execute(f"http://127.0.0.1:{url['port']}", url["token"],
                                        "print('direct')")
        assert output.strip() == "direct"
        listed = run_labhop("ls", "-F", config, "gpubox", "--no-multiplex")
        assert listed.rc == 0 and "direct" in listed.stdout, listed.stderr
        argvs = [cmd.split() for _, cmd in ssh_processes(config)]
        assert argvs, "the tunnel is an ssh of its own"
        assert not [argv for argv in argvs if "-M" in argv or "-O" in argv], argvs
        assert not (runtime_dir / "labhop").exists() or not any(
            stat.S_ISSOCK(entry.stat().st_mode) for entry in (runtime_dir / "labhop").iterdir())
        stopped = run_labhop("stop", "-F", config, "gpubox", "direct", "--no-multiplex")
        assert stopped.rc == 0, stopped.stderr
        run.interrupt()
        run.wait(30)
    assert no_laptop_leftovers(runtime_dir) == []
    assert wait_until_no_user_processes() == []

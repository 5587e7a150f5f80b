"""`--forward REMOTE_PORT[:LOCAL_PORT]` end to end: a real HTTP server on the remote (the
stand-in for TensorBoard or a Dask dashboard), reached through labhop's own tunnel, restored
after the network changed, gone after Ctrl+C; and a --port or LOCAL_PORT that is taken, or
privileged for a user who is not root, stops labhop before anything starts on the host."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import pytest

from labhop.ssh.ports import unprivileged_port_start
from tests.labhop_cli import LabhopProcess, run_labhop
from tests.relay import Relay, write_flaky_config
from tests.test_connection_e2e import no_laptop_leftovers
from tests.test_start_e2e import STATE, URL
from tests.testbed import (
    HOME,
    USER,
    SlurmCluster,
    Sshd,
    free_port,
    listening_addresses,
    processes_with_in_cmdline,
    user_processes,
)

pytestmark = pytest.mark.e2e

PYTHON = HOME / "jvenv/bin/python"
FORWARD = r"^  forward: http://127\.0\.0\.1:(?P<local>\d+) -> (?P<where>\S+):{remote}$"


@dataclass(frozen=True)
class RemoteHttp:
    """`python -m http.server` run by lhtest on the remote, serving one file."""

    pid: int
    port: int
    directory: str
    content: str


@contextlib.contextmanager
def remote_http(sshd: Sshd, port: int, *, bind: str = "127.0.0.1") -> Iterator[RemoteHttp]:
    """Start it over ssh as lhtest, wait until it listens, and stop it by its PID after."""
    content = secrets.token_hex(8)
    script = (f'd=$(mktemp -d) && printf %s {content} > "$d/hello.txt" && cd "$d" || exit 1; '
              f"nohup {PYTHON} -m http.server --bind {bind} {port} "
              '</dev/null >/dev/null 2>&1 & echo "$! $d"')
    result = sshd.run(sshd.alias(), script)
    assert result.returncode == 0, result.stderr
    pid_text, directory = result.stdout.split()
    server = RemoteHttp(int(pid_text), port, directory, content)
    deadline = time.monotonic() + 15
    while not listening_addresses(port):
        assert time.monotonic() < deadline, f"the remote HTTP server never listened on {port}"
        time.sleep(0.1)
    # The listener is the server's, not one that held the port already (it would exit).
    time.sleep(0.5)
    assert any(pid == server.pid for pid, _ in user_processes()), f"{port} was taken"
    try:
        yield server
    finally:
        # Only the process we started, and only while it is still that server.
        if any(pid == server.pid for pid, _ in processes_with_in_cmdline("http.server")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.pid, signal.SIGTERM)
        sshd.run(sshd.alias(), f"rm -rf {directory}")


def fetch(local_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{local_port}/hello.txt",
                                timeout=10) as response:
        return str(response.read().decode())


def forward_port(run: LabhopProcess, remote: int, where: str) -> int:
    match = run.wait_for(FORWARD.format(remote=remote), timeout=10)
    assert match["where"] == where
    return int(match["local"])


def nothing_listens(*ports: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while any(listening_addresses(port) for port in ports):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def wait_until_only_dead_sessions_are_left(timeout: float = 15) -> list[str]:
    """lhtest's processes but the sshd sessions of connections the relay cut (sshd never
    learns they died; they are sshd's own, not labhop's)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [cmd for _, cmd in user_processes() if not cmd.startswith("sshd:")]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@pytest.mark.parametrize("multiplex", [True, False], ids=["shared-master", "no-multiplex"])
def test_forwards_reach_the_remote_come_back_after_a_network_change_and_end_with_ctrl_c(
        sshd: Sshd, tmp_path: Path, runtime_dir: Path, multiplex: bool) -> None:
    first, second, idle = free_port(), free_port(), free_port()
    second_local = free_port()
    with (Relay.start(sshd.port) as relay,
          remote_http(sshd, first) as tensorboard,
          remote_http(sshd, second) as dashboard):
        # Short keep-alives, so the dead connection is noticed in seconds.
        config = write_flaky_config(sshd, relay, directory=tmp_path, options={
            "ServerAliveInterval": "1", "ServerAliveCountMax": "3"})
        args = ["-F", str(config), "gpubox-flaky", "--name", "proj", "--no-browser",
                "--forward", str(first), "--forward", f"{second}:{second_local}",
                "--forward", str(idle)]
        with LabhopProcess.start(*args, *([] if multiplex else ["--no-multiplex"])) as run:
            url = run.wait_for(URL, timeout=90)
            first_local = forward_port(run, first, "gpubox-flaky")
            assert forward_port(run, second, "gpubox-flaky") == second_local
            # Nothing listens behind this one (yet); it gets its remote port here. Nothing
            # connects to it: on this one-machine test bed that would be a loop.
            assert forward_port(run, idle, "gpubox-flaky") == idle
            # The test bed's remote is this machine, so the HTTP server holds `first` here
            # too: that forward moved to a free port and said so.
            assert first_local != first
            assert (f"local port {first} (--forward {first}) is busy; using {first_local} "
                    "instead") in run.output
            ports = (int(url["port"]), first_local, second_local, idle)
            for port in ports:
                assert listening_addresses(port) == {"127.0.0.1"}, port
            assert fetch(first_local) == tensorboard.content
            assert fetch(second_local) == dashboard.content

            # The laptop moves to another network: every connection is dead for good.
            relay.cut()
            run.wait_for(r"lost the connection to gpubox-flaky", timeout=60)
            run.wait_for(r"reconnected; .* works again", timeout=60)
            assert "moved to" not in run.output
            assert fetch(first_local) == tensorboard.content
            assert fetch(second_local) == dashboard.content
            for port in ports:
                assert listening_addresses(port) == {"127.0.0.1"}, port

            run.interrupt()
            assert run.wait(30) == 0, run.output
            assert "stopped 'proj'" in run.output
        assert nothing_listens(*ports)
        # No ssh, guard or tunnel of labhop's is left, nor anything in its run directory.
        assert no_laptop_leftovers(runtime_dir) == []
        assert not re.search(r"Traceback", run.output)
    assert wait_until_only_dead_sessions_are_left() == []


@pytest.mark.parametrize("option", ["--port", "--forward"])
def test_a_taken_port_asked_for_stops_labhop_before_anything_starts(
        sshd: Sshd, option: str) -> None:
    logins_before = sshd.log_path.read_text().count("Accepted publickey")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        value = str(port) if option == "--port" else f"6006:{port}"
        result = run_labhop("-F", str(sshd.config), "gpubox", "--name", "proj",
                            "--no-browser", option, value, timeout=60)
    assert result.rc == 25, result.stderr
    # One line, and nothing before it: labhop did not even connect.
    [line] = result.stderr.splitlines()
    assert line.startswith(f"labhop: error: local port {port} ")
    assert "is already in use" in line
    assert sshd.log_path.read_text().count("Accepted publickey") == logins_before
    assert user_processes() == []
    assert not (STATE / "proj").exists()
    listed = run_labhop("ls", "-F", str(sshd.config), "gpubox")
    assert listed.rc == 0, listed.stderr
    assert "no labhop servers are running on gpubox" in listed.stderr


# What a labhop run that stops before any ssh imports (rich loads only when used).
PACKAGES = ("labhop", "click", "platformdirs")


def run_labhop_as_test_user(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run labhop ARGS as lhtest, who is not root: with Debian's python (the project's may be
    root's own, unreadable to others) on a copy of labhop and its imports in `workdir`,
    which must be a fresh directory that lhtest can read."""
    lib = workdir / "lib"
    for name in PACKAGES:
        spec = find_spec(name)
        assert spec is not None and spec.submodule_search_locations, name
        shutil.copytree(spec.submodule_search_locations[0], lib / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    state = workdir / "state"
    state.mkdir()
    shutil.chown(state, USER, USER)
    env = {"HOME": str(HOME), "USER": USER, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
           "PYTHONPATH": str(lib), "LABHOP_CONFIG_DIR": str(state / "config"),
           "XDG_CACHE_HOME": str(state / "cache"), "XDG_RUNTIME_DIR": str(state)}
    return subprocess.run(
        ["runuser", "-u", USER, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
         "/usr/bin/python3", "-m", "labhop", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
        start_new_session=True)


@pytest.mark.parametrize(("option", "value", "advice"), [
    ("--port", "80", "pick a --port of {first} or more, or leave it out to get a free one"),
    ("--forward", "6006:80", "pick a LOCAL_PORT of {first} or more, or give only --forward "
                             "6006 to get a free one"),
])
def test_a_privileged_port_asked_for_by_a_user_is_called_privileged(
        sshd: Sshd, option: str, value: str, advice: str) -> None:
    """Not "already in use": that sent users looking for a program that holds port 80."""
    first = unprivileged_port_start()
    if first <= 80:
        pytest.skip(f"no port below {first} is privileged on this machine")
    logins_before = sshd.log_path.read_text().count("Accepted publickey")
    workdir = Path(tempfile.mkdtemp(prefix="lhport-"))
    try:
        workdir.chmod(0o755)
        # Only the alias: labhop must stop before it connects (nothing listens on port 9).
        config = workdir / "ssh_config"
        config.write_text("Host gpubox\n    HostName 127.0.0.1\n    Port 9\n")
        result = run_labhop_as_test_user(workdir, "-F", str(config), "gpubox", "--name",
                                         "proj", "--no-browser", option, value)
    finally:
        shutil.rmtree(workdir)
    assert result.returncode == 25, result.stderr
    [line] = result.stderr.splitlines()
    where = "" if option == "--port" else f" (--forward {value})"
    assert line == (f"labhop: error: local port 80{where} is privileged (ports below {first} "
                    f"need root here); {advice.format(first=first)}")
    assert sshd.log_path.read_text().count("Accepted publickey") == logins_before
    assert not (STATE / "proj").exists()


def test_the_json_ready_event_lists_each_forward(sshd: Sshd) -> None:
    """An editor or script that takes over the server finds the forwards in `ready`."""
    remote_port = free_port()
    with (remote_http(sshd, remote_port) as tensorboard,
          LabhopProcess.start("-F", str(sshd.config), "gpubox", "--name", "proj", "--json",
                              "--forward", str(remote_port), merge_stderr=False) as run):
        run.wait_for(r'^\{"event": "ready", .*\}$', timeout=90)
        [ready] = [event for event in map(json.loads, run.output.splitlines())
                   if event["event"] == "ready"]
        [forward] = ready["forwards"]
        assert forward["remote"] == f"gpubox:{remote_port}"  # the host as typed
        assert forward["url"] == f"http://127.0.0.1:{forward['local_port']}"
        assert fetch(forward["local_port"]) == tensorboard.content
        run.interrupt()
        assert run.wait(30) == 0, run.stderr
    assert nothing_listens(forward["local_port"])


def test_a_forward_of_a_slurm_job_reaches_its_node(slurm: SlurmCluster) -> None:
    sshd = slurm.login
    remote_port, local_port = free_port(), free_port()
    # An explicit LOCAL_PORT: the node is this machine, where the forward must not hold
    # the port the program is about to listen on.
    with LabhopProcess.start("-F", str(sshd.config), "gpubox", "--name", "proj", "--no-browser",
                             "--slurm", "-p gpu -t 00:10:00", "--forward",
                             f"{remote_port}:{local_port}") as run:
        run.wait_for(URL, timeout=120)
        assert forward_port(run, remote_port, slurm.node) == local_port
        # The job's node listens where the login node reaches it: the address of its
        # Jupyter. The program to forward listens there too.
        endpoint = (STATE / "proj" / "endpoint").read_text().strip()
        address = socket.gethostbyname(endpoint.removeprefix("tcp:").rpartition(":")[0])
        if not ipaddress.ip_address(address).is_loopback:
            pytest.skip(f"the node's address {address} is not loopback; tests stay on it")
        with remote_http(sshd, remote_port, bind=address) as program:
            assert fetch(local_port) == program.content
        run.interrupt()
        assert run.wait(60) == 0, run.output
    assert nothing_listens(local_port)

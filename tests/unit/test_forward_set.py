"""The forward set of a session (the server's port and each --forward): which local ports
it picks, what a taken or a privileged port does, and how ssh's own words about a taken port
are read.

The port choice runs against real local sockets; the transport below it is a stand-in that
records what it was asked to forward (the real one is tested end to end, against sshd, in
tests/test_forward_e2e.py).
"""

from __future__ import annotations

import errno
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from labhop.cli.main import main
from labhop.errors import ExitStatus, LocalPortError
from labhop.model import Forward
from labhop.session.tunnel import LocalTunnel, check_requested_ports, forward_line, local_ends
from labhop.ssh import ports as local_ports
from labhop.ssh import proc
from labhop.ssh.failures import taken_local_port
from labhop.ssh.ports import Refusal, classify_bind_error, preferred_port
from labhop.ssh.target import Target, parse_ssh_g
from labhop.ssh.transport import DirectTransport, forward_spec

HOST = "nosuchhost.invalid"

# What OpenSSH 9.2p1 printed for a taken port (captured against the loopback test sshd):
# `ssh -N -o ExitOnForwardFailure=yes -L A -L B` with B taken, and `ssh -O forward -L B`.
DIRECT_TAKEN = ("bind [127.0.0.1]:47191: Address already in use\n"
                "channel_setup_fwd_listener_tcpip: cannot listen to port: 47191\n"
                "Could not request local forwarding.\n")
MUX_TAKEN = ("mux_client_forward: forwarding request failed: Port forwarding failed\n"
             "muxclient: master forward request failed\n")


def test_which_port_ssh_could_not_listen_on() -> None:
    assert taken_local_port(DIRECT_TAKEN, [40000, 47191]) == 47191
    assert taken_local_port("bind [127.0.0.1]:6006: Address already in use\n", [6006]) == 6006
    assert taken_local_port(DIRECT_TAKEN, [40000]) is None  # not one of ours
    assert taken_local_port(MUX_TAKEN, [6006]) is None


def test_a_direct_tunnel_carries_every_forward_of_the_set(tmp_path: Path) -> None:
    direct = DirectTransport(Target("gamer"), parse_ssh_g("host gamer\nport 22\n"), "ssh",
                             tmp_path)
    specs = [forward_spec((9100, "/run/s.sock")), forward_spec((6006, "localhost:6006"))]
    assert specs == ["127.0.0.1:9100:/run/s.sock", "127.0.0.1:6006:localhost:6006"]
    argv = direct.tunnel_argv(*specs)
    assert [argv[i + 1] for i, arg in enumerate(argv) if arg == "-L"] == specs
    assert "ExitOnForwardFailure=yes" in argv


# ---------------------------------------------------------------------------------------
class FakeTransport:
    """Refuses the ports in `taken` the way ssh does (LocalPortError naming the port)."""

    def __init__(self, taken: Sequence[int] = ()) -> None:
        self.taken = set(taken)
        self.opened: list[list[tuple[int, str]]] = []

    def open_tunnel(self, forwards: Sequence[tuple[int, str]]) -> Any:
        self.opened.append(list(forwards))
        for port, _ in forwards:
            if port in self.taken:
                raise LocalPortError(f"cannot listen on 127.0.0.1:{port}", port=port)
        return SimpleNamespace(holds=lambda: True, close=lambda: None)


class FakeUI:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


def tunnel(transport: FakeTransport, port: int | None, *forwards: Forward
           ) -> tuple[LocalTunnel, FakeUI]:
    ui = FakeUI()
    conn: Any = SimpleNamespace(transport=transport)
    return LocalTunnel(conn, ui, host="gamer", port=port, forwards=forwards), ui  # type: ignore[arg-type]


@pytest.fixture
def busy() -> Iterator[int]:
    """A local port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_each_forward_gets_its_remote_port_here_when_free() -> None:
    remote = free_port()
    transport = FakeTransport()
    session, ui = tunnel(transport, None, Forward(remote))
    assert session.open("/run/s.sock", "localhost") == []
    [forwards] = transport.opened
    assert forwards[1] == (remote, f"localhost:{remote}")
    assert forwards[0][1] == "/run/s.sock"
    [extra] = session.extra_ends
    assert extra.port == remote
    assert forward_line(extra, "gamer") == (
        f"  forward: http://127.0.0.1:{remote} -> gamer:{remote}")
    assert [line for line in ui.lines if "--forward" in line] == []


def test_a_busy_remote_port_moves_the_forward_to_a_free_one_and_says_so(busy: int) -> None:
    session, ui = tunnel(FakeTransport(), None, Forward(busy))
    session.open("/run/s.sock", "node07")
    [extra] = session.extra_ends
    assert extra.port not in (None, busy)
    assert f"local port {busy} (--forward {busy}) is busy; using {extra.port} instead" in ui.lines


def test_a_local_port_asked_for_that_is_taken_is_an_error(busy: int) -> None:
    session, _ = tunnel(FakeTransport(), None, Forward(6006, busy))
    with pytest.raises(LocalPortError, match=rf"local port {busy} \(--forward 6006:{busy}\) "
                                             r"is already in use; pick another LOCAL_PORT"):
        session.open("/run/s.sock", "localhost")
    with pytest.raises(LocalPortError, match=rf"local port {busy} is already in use; pick "
                                             "another --port"):
        check_requested_ports(local_ends(busy, (), host="gamer"))
    check_requested_ports(local_ends(None, (Forward(busy),), host="gamer"))  # only a wish


def test_a_port_taken_just_before_ssh_binds_it(busy: int) -> None:
    """The check before is advice: ssh's own failure to bind decides."""
    wanted = free_port()
    explicit, _ = tunnel(FakeTransport(taken=[wanted]), None, Forward(6006, wanted))
    with pytest.raises(LocalPortError) as caught:
        explicit.open("/run/s.sock", "localhost")
    assert caught.value.port == wanted
    # Not asked for: that forward alone moves to another port, the others stay.
    transport = FakeTransport(taken=[wanted])
    moving, _ = tunnel(transport, None, Forward(wanted), Forward(busy))
    moving.open("/run/s.sock", "localhost")
    first, second = transport.opened
    assert first[1][0] == wanted and second[1][0] != wanted
    assert first[0] == second[0] and first[2] == second[2]
    assert moving.extra_ends[0].port == second[1][0]


def test_ports_asked_for_come_first_and_nobody_gets_a_port_twice() -> None:
    mine = free_port()
    # --forward MINE wants its remote port here, which --forward 6006:MINE asked for.
    transport = FakeTransport()
    session, _ = tunnel(transport, None, Forward(mine), Forward(6006, mine))
    session.open("/run/s.sock", "localhost")
    ports = [port for port, _ in transport.opened[0]]
    assert ports[2] == mine and ports[1] != mine and len(set(ports)) == 3
    assert ports[0] == preferred_port("gamer") or ports[0] not in ports[1:]


def test_a_reconnect_restores_every_port_or_says_which_moved() -> None:
    transport = FakeTransport()
    session, _ = tunnel(transport, None, Forward(free_port()), Forward(free_port()))
    session.open("/run/s.sock", "localhost")
    before = [end.port for end in session.ends]
    assert session.open("/run/s.sock", "localhost") == []
    assert [port for port, _ in transport.opened[-1]] == before
    # Someone took the second forward's port while the connection was down.
    second = session.extra_ends[1]
    assert second.port is not None
    transport.taken = {second.port}
    moved = session.open("/run/s.sock", "localhost")
    assert moved == [(second, before[2])]
    assert [end.port for end in session.ends][:2] == before[:2]
    assert second.port != before[2]


def no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting any process (ssh above all) fails the test."""
    def refuse(*args: object, **kwargs: object) -> subprocess.Popen[str]:
        raise AssertionError(f"a process was started: {args!r}")

    for name in ("run", "run_interactive", "spawn", "start_inheriting", "spawn_guarded"):
        monkeypatch.setattr(proc, name, refuse)


# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("option", [["--port", "{busy}"], ["--forward", "6006:{busy}"]],
                         ids=["port", "forward"])
@pytest.mark.parametrize("command", [[HOST], ["attach", HOST]], ids=["start", "attach"])
def test_a_taken_port_asked_for_ends_the_run_before_any_ssh(
        busy: int, option: list[str], command: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    no_processes(monkeypatch)
    with pytest.raises(SystemExit) as caught:
        main([*command, "--no-browser", option[0], option[1].format(busy=busy)])
    assert caught.value.code == ExitStatus.LOCAL_PORT
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"labhop: error: local port {busy} ")
    assert "is already in use" in lines[0]


# ---------------------------------------------------------------------------------------
# A privileged port: the tests run as root, where port 80 binds, so the refusal a user who is
# not root gets is injected at the bind (tests/test_forward_e2e.py runs labhop as lhtest).
@pytest.mark.parametrize(("port", "err", "first", "refusal"), [
    (80, errno.EADDRINUSE, 1024, Refusal.IN_USE),
    (80, errno.EACCES, 1024, Refusal.PRIVILEGED),
    (1023, errno.EPERM, 1024, Refusal.PRIVILEGED),
    # At or above the threshold a permission error is a policy's, not privilege.
    (1024, errno.EACCES, 1024, Refusal.DENIED),
    (80, errno.EACCES, 0, Refusal.DENIED),  # a machine where no port is privileged
    (80, errno.EADDRNOTAVAIL, 1024, None),  # no refusal of the port: raised as it is
])
def test_what_a_bind_error_says_about_the_port(port: int, err: int, first: int,
                                                refusal: Refusal | None) -> None:
    assert classify_bind_error(port, err, first) is refusal


class UnprivilegedSocket(socket.socket):
    """A socket as a user who is not root has it: ports 1-1023 refuse with EACCES (0, any
    free port, is a high one)."""

    def bind(self, address: Any) -> None:
        if 0 < address[1] < 1024:
            raise PermissionError(errno.EACCES, "Permission denied")
        super().bind(address)


@pytest.fixture
def not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_ports.socket, "socket", UnprivilegedSocket)


def test_the_first_unprivileged_port_comes_from_the_kernel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    start = tmp_path / "ip_unprivileged_port_start"
    monkeypatch.setattr(local_ports, "UNPRIVILEGED_PORT_START_FILE", start)
    assert local_ports.unprivileged_port_start() == 1024  # no such file (not Linux)
    start.write_text("512\n")
    assert local_ports.unprivileged_port_start() == 512
    start.write_text("garbage\n")
    assert local_ports.unprivileged_port_start() == 1024


@pytest.mark.usefixtures("not_root")
def test_a_privileged_port_asked_for_is_called_privileged_not_in_use(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_ports, "UNPRIVILEGED_PORT_START_FILE", tmp_path / "none")
    with pytest.raises(LocalPortError) as caught:
        check_requested_ports(local_ends(80, (), host="gamer"))
    assert str(caught.value) == (
        "local port 80 is privileged (ports below 1024 need root here); pick a --port of "
        "1024 or more, or leave it out to get a free one")
    assert caught.value.status == ExitStatus.LOCAL_PORT and caught.value.port == 80
    with pytest.raises(LocalPortError) as caught:
        check_requested_ports(local_ends(None, (Forward(6006, 443),), host="gamer"))
    assert str(caught.value) == (
        "local port 443 (--forward 6006:443) is privileged (ports below 1024 need root here); "
        "pick a LOCAL_PORT of 1024 or more, or give only --forward 6006 to get a free one")
    # The tunnel's own check (a reopen) says the same.
    session, _ = tunnel(FakeTransport(), 80)
    with pytest.raises(LocalPortError, match="local port 80 is privileged"):
        session.open("/run/s.sock", "localhost")


@pytest.mark.usefixtures("not_root")
def test_a_privileged_remote_port_moves_the_forward_and_is_not_called_busy() -> None:
    session, ui = tunnel(FakeTransport(), None, Forward(80))
    session.open("/run/s.sock", "localhost")
    [extra] = session.extra_ends
    assert extra.port is not None and extra.port >= 1024
    assert f"local port 80 (--forward 80) is privileged; using {extra.port} instead" in ui.lines


def test_a_port_denied_by_a_policy_is_not_called_privileged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(self: socket.socket, address: Any) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(UnprivilegedSocket, "bind", denied)
    monkeypatch.setattr(local_ports.socket, "socket", UnprivilegedSocket)
    with pytest.raises(LocalPortError) as caught:
        check_requested_ports(local_ends(5000, (), host="gamer"))
    assert str(caught.value) == (
        "local port 5000 may not be listened on here (permission denied); pick another "
        "--port or leave it out to get a free one")


@pytest.mark.usefixtures("not_root")
@pytest.mark.parametrize(("option", "word"), [(["--port", "80"], "--port"),
                                              (["--forward", "6006:80"], "LOCAL_PORT")],
                         ids=["port", "forward"])
def test_a_privileged_port_asked_for_ends_the_run_before_any_ssh(
        option: list[str], word: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    no_processes(monkeypatch)
    with pytest.raises(SystemExit) as caught:
        main([HOST, "--no-browser", *option])
    assert caught.value.code == ExitStatus.LOCAL_PORT
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("labhop: error: local port 80 ")
    assert "is privileged" in line and "in use" not in line
    assert f"pick a {word} of {local_ports.unprivileged_port_start()} or more" in line

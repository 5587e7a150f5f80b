"""The local ends of the way to a server: ports on 127.0.0.1 that labhop's own ssh holds.

One set of forwards, opened, restored and closed together: the server's own (the
browser's URL, the only one the token goes to) and one per `--forward` (TensorBoard, a
Dask dashboard... on the server's host, or its job's node). For each it picks the port
(the one asked for, else a first choice: the host's stable default for the server, the
remote port for a --forward; else a free one), opens them again on the same ports after a
reconnect, moves one to a free port when someone else took it meanwhile, and says whether
labhop holds them right now: the token is only ever sent to a port for which `holds()` is
true.

"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from labhop.errors import LocalPortError
from labhop.model import Forward
from labhop.ssh import ports
from labhop.ssh.connection import Connection
from labhop.ssh.transport import Tunnel
from labhop.ui import UI

ATTEMPTS = 5


@dataclass(eq=False)
class LocalEnd:
    """One forward of the set and where it listens here."""

    forward: Forward | None  # None: the server's own (Jupyter's URL)
    requested: int | None  # the local port asked for (--port, --forward R:L); None: any
    first_choice: int  # tried first when none was asked for
    port: int | None = None  # where it listened after the last successful open

    @property
    def option(self) -> str:
        return "--port" if self.forward is None else f"--forward {self.forward}"

    def remote_end(self, server_end: str, forward_host: str) -> str:
        if self.forward is None:
            return server_end
        return f"{forward_host}:{self.forward.remote_port}"

    def check_requested(self) -> None:
        """Raise the error that says why the port asked for cannot be had now, if it cannot."""
        assert self.requested is not None
        refusal = ports.port_refusal(self.requested)
        if refusal is not None:
            raise self.refused_error(refusal)

    def refused_error(self, refusal: ports.Refusal) -> LocalPortError:
        """The error for a port asked for that cannot be had: why, and what to ask instead."""
        assert self.requested is not None
        where = "" if self.forward is None else f" (--forward {self.forward})"
        port = f"local port {self.requested}{where}"
        if refusal is ports.Refusal.PRIVILEGED:
            first = ports.unprivileged_port_start()
            message = (f"{port} is privileged (ports below {first} need root here); "
                       f"{self._advice(f'of {first} or more')}")
        elif refusal is ports.Refusal.DENIED:
            message = f"{port} may not be listened on here (permission denied); {self._advice()}"
        else:
            message = f"{port} is already in use; {self._advice()}"
        return LocalPortError(message, port=self.requested)

    def _advice(self, which: str = "") -> str:
        """What to do instead: another port (`which`: what kind), or none to get a free one."""
        if self.forward is None:
            pick = f"pick a --port {which}," if which else "pick another --port"
            return f"{pick} or leave it out to get a free one"
        pick = f"pick a LOCAL_PORT {which}," if which else "pick another LOCAL_PORT"
        return f"{pick} or give only --forward {self.forward.remote_port} to get a free one"


def forward_fields(end: LocalEnd, where: str) -> dict[str, object]:
    """A --forward as `--json` shows it: its local `url` and `local_port`, its `remote` end
    (`where` names the host or node for people)."""
    assert end.forward is not None and end.port is not None
    return {"url": f"http://127.0.0.1:{end.port}", "local_port": end.port,
            "remote": f"{where}:{end.forward.remote_port}"}


def forward_line(end: LocalEnd, where: str) -> str:
    """How a --forward is shown: '  forward: http://127.0.0.1:6006 -> gamer:6006'."""
    fields = forward_fields(end, where)
    return f"  forward: {fields['url']} -> {fields['remote']}"


def local_ends(port: int | None, forwards: Iterable[Forward], *, host: str) -> list[LocalEnd]:
    """The local ends of a session: the server's first, then each --forward."""
    ends = [LocalEnd(None, port, ports.preferred_port(host))]
    ends += [LocalEnd(forward, forward.local_port, forward.remote_port)
             for forward in forwards]
    return ends


def check_requested_ports(ends: Sequence[LocalEnd]) -> None:
    """Advice before anything starts: a port asked for that is in use now, or one we may
    not listen on (a privileged one), ends the run with the same error the tunnel would
    give (it could still be taken before ssh binds it, which `LocalTunnel.open` handles
    as well)."""
    for end in ends:
        if end.requested is not None:
            end.check_requested()


class LocalTunnel:
    def __init__(self, conn: Connection, ui: UI, *, host: str, port: int | None,
                 forwards: Sequence[Forward] = ()) -> None:
        self.conn = conn
        self.ui = ui
        self.host = host
        self.ends = local_ends(port, forwards, host=host)
        self._forward: Tunnel | None = None

    @property
    def server_end(self) -> LocalEnd:
        return self.ends[0]

    @property
    def extra_ends(self) -> list[LocalEnd]:
        return self.ends[1:]

    @property
    def port(self) -> int | None:
        """The server's local port, as of the last successful open."""
        return self.server_end.port

    def holds(self) -> bool:
        """Whether our own ssh listens on the local ports right now (see ssh.Tunnel)."""
        return self._forward is not None and self._forward.holds()

    def open(self, server_end: str, forward_host: str = "localhost"
             ) -> list[tuple[LocalEnd, int]]:
        """Forward each local port: the server's to `server_end`, each --forward's to
        `forward_host:REMOTE_PORT`. Returns (end, old port) for each end that had to move
        to another port (someone took the old one while the connection was down)."""
        self.close()
        chosen: dict[LocalEnd, int] = {}
        # What was asked for first, so that no first choice of another end takes it.
        for end in sorted(self.ends, key=lambda end: end.requested is None):
            chosen[end] = self._pick(end, set(chosen.values()))
        for _attempt in range(ATTEMPTS + len(self.ends)):
            forwards = [(chosen[end], end.remote_end(server_end, forward_host))
                        for end in self.ends]
            try:
                self._forward = self.conn.transport.open_tunnel(forwards)
            except LocalPortError as exc:
                failed = next((end for end in self.ends if chosen[end] == exc.port), None)
                if failed is None or (failed.port is None and failed.requested is not None):
                    raise  # a port that was asked for is that port or an error
                chosen[failed] = _free_port(set(chosen.values()))
                continue
            return self._opened(chosen)
        raise LocalPortError("could not find free local ports for the tunnel; retry, or "
                             "pass --port N")

    def _pick(self, end: LocalEnd, used: set[int]) -> int:
        if end.port is None and end.requested is not None:
            end.check_requested()
            return end.requested
        wanted = end.port or end.first_choice
        if wanted in used or not ports.port_is_free(wanted):
            return _free_port(used)
        return wanted

    def _opened(self, chosen: dict[LocalEnd, int]) -> list[tuple[LocalEnd, int]]:
        moved = []
        for end in self.ends:
            port = chosen[end]
            if end.port is None and port != (end.requested or end.first_choice):
                self.ui.info(f"local port {end.first_choice}"
                             f"{'' if end.forward is None else f' ({end.option})'} "
                             f"{_why_not(end.first_choice)}; using {port} instead")
            elif end.port is not None and port != end.port:
                moved.append((end, end.port))
            end.port = port
        return moved

    def close(self) -> None:
        if self._forward is not None:
            self._forward.close()
            self._forward = None


def _free_port(used: set[int]) -> int:
    while True:
        port = ports.any_free_port()
        if port not in used:
            return port


def _why_not(port: int) -> str:
    """Why a first choice was passed over, as a line says it: asked again now (a rare line),
    so that a privileged one (--forward 80) is not called busy."""
    refusal = ports.port_refusal(port)
    if refusal is ports.Refusal.PRIVILEGED:
        return "is privileged"
    if refusal is ports.Refusal.DENIED:
        return "may not be listened on"
    return "is busy"

"""The local end of the way to a server: a port on 127.0.0.1 that labhop's own ssh holds.

It picks the port (the one asked for, else the host's stable default, else a free one),
opens it again on the same port after a reconnect, moves to a free port when someone else
took the old one meanwhile, and says whether labhop holds it right now: the token is only
ever sent to a port for which `holds()` is true.
"""

from __future__ import annotations

from labhop import local
from labhop.connection import Connection
from labhop.errors import LocalPortError
from labhop.ssh import Tunnel
from labhop.ui import UI

ATTEMPTS = 5


class LocalTunnel:
    def __init__(self, conn: Connection, ui: UI, *, host: str, port: int | None) -> None:
        self.conn = conn
        self.ui = ui
        self.host = host
        self.requested_port = port
        self.port: int | None = None  # the port of the last successful open
        self._forward: Tunnel | None = None

    def holds(self) -> bool:
        """Whether our own ssh listens on the local port right now (see ssh.Tunnel)."""
        return self._forward is not None and self._forward.holds()

    def open(self, remote_end: str) -> bool:
        """Forward the local port to `remote_end`; True if it had to move to another port
        (someone took the old one while the connection was down)."""
        self.close()
        if self.port is None and self.requested_port is not None:
            if not local.port_is_free(self.requested_port):
                raise LocalPortError(
                    f"local port {self.requested_port} is already in use; pick another "
                    "--port or leave it out to get a free one")
            self._forward = self.conn.transport.open_tunnel(self.requested_port, remote_end)
            self.port = self.requested_port
            return False
        wanted = self.port or local.preferred_port(self.host)
        port = wanted
        for attempt in range(ATTEMPTS):
            if attempt or not local.port_is_free(port):
                port = local.any_free_port()
            try:
                self._forward = self.conn.transport.open_tunnel(port, remote_end)
            except LocalPortError:
                continue
            moved = self.port is not None and port != wanted
            if port != wanted and not moved:
                self.ui.info(f"local port {wanted} is busy; using {port} instead")
            self.port = port
            return moved
        raise LocalPortError("could not find a free local port for the tunnel; retry, or "
                             "pass --port N")

    def close(self) -> None:
        if self._forward is not None:
            self._forward.close()
            self._forward = None

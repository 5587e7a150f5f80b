"""Waiting until a server answers through the tunnel: the one proof that it is ready.

Jupyter says it is running before it listens, and ssh keeps a forward up to a socket
that does not exist, so ready means `GET /api/status` with the token answering 200
through the tunnel (facts.md 0.1, 0.7). While waiting, the server is checked every
second: a server that died shows its log, and a socket that exists while the tunnel
hangs up on every connection means sshd refuses Unix-socket forwarding.

"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from labhop import debuglog
from labhop.backends.base import Backend, Server, Status
from labhop.errors import LabhopError, ServerExitedError, SSHError, StartTimeoutError, with_log
from labhop.session import server_api
from labhop.session.tunnel import LocalTunnel
from labhop.ui import UI

_LOGGER = debuglog.get(__name__)


# How long a stream-local forward may keep failing after the socket exists before we
# conclude that sshd refuses Unix-socket forwarding and fall back to TCP.
SOCKET_REFUSED_AFTER_S = 3.0


PROBE_INTERVAL_S = 0.1


CHECK_INTERVAL_S = 1.0


def log_tail(backend: Backend, server: Server) -> str:
    with contextlib.suppress(LabhopError):
        return backend.status(server.name, with_log=True).log
    return ""


def require_alive(backend: Backend, server: Server, gone: str) -> Status:
    """The server's status; if it is not alive, `gone` and the last lines of its log."""
    status = backend.status(server.name)
    if not status.alive:
        raise ServerExitedError(**with_log(gone, log_tail(backend, server)))
    return status


@dataclass
class Readiness:
    backend: Backend
    tunnel: LocalTunnel
    ui: UI
    host: str
    label: str
    timeout: float

    def wait(self, server: Server, *, relaunch_over_tcp: Callable[[], Server]) -> Server:
        """Return once `server` answers (or the TCP server that replaced it)."""
        started = time.monotonic()
        deadline = started + self.timeout
        next_check = started
        listening = False
        hung_up_since: float | None = None
        with self.ui.spinner(f"waiting for {self.label} to answer"):
            while True:
                now = time.monotonic()
                if not self.tunnel.holds():
                    raise SSHError(f"lost the connection to {self.host} while {self.label} "
                                   "was starting; check the network and retry")
                assert self.tunnel.port is not None
                result = server_api.probe(self.tunnel.port, server.token, timeout=5)
                if result == "ok":
                    break
                if now >= next_check:
                    next_check = now + CHECK_INTERVAL_S
                    listening = self._alive_and_listening(server)
                # The socket is there, yet the tunnel hangs up on every connection at
                # once: this sshd refuses to forward to Unix sockets.
                if result == "closed" and listening and server.transport == "unix":
                    hung_up_since = hung_up_since or now
                    if now - hung_up_since > SOCKET_REFUSED_AFTER_S:
                        self.ui.warn(f"{self.host}'s sshd refuses Unix-socket forwarding "
                                     "(AllowStreamLocalForwarding); using TCP on its loopback "
                                     "instead")
                        server = relaunch_over_tcp()
                        listening, hung_up_since = False, None
                        continue
                else:
                    hung_up_since = None
                if now >= deadline:
                    raise StartTimeoutError(**with_log(
                        f"{self.label} did not answer within {self.timeout:.0f} s on "
                        f"{self.host} (raise --timeout if the host is slow)",
                        log_tail(self.backend, server)))
                time.sleep(PROBE_INTERVAL_S)
        _LOGGER.debug("ready after %.2f s of waiting", time.monotonic() - started)
        return server

    def _alive_and_listening(self, server: Server) -> bool:
        """Raise if the server died; return whether its socket exists yet."""
        status = require_alive(self.backend, server,
                               f"{self.label} exited during start-up on {self.host}")
        return bool(status.listening)

"""Keeping an attached session alive: notice a dead connection, reconnect with backoff on
the same local port (or a new one, said in one line), and notice a server that ended
behind the tunnel (stopped elsewhere, culled, crashed, or a job at its walltime).

"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NoReturn

from labhop import debuglog
from labhop.backends.base import Backend, Health, Server
from labhop.errors import (
    MasterBusyError,
    ServerEndedError,
    SSHError,
    WalltimeReachedError,
    with_log,
)
from labhop.session import walltime
from labhop.session.readiness import log_tail
from labhop.session.tunnel import LocalTunnel, forward_fields, forward_line
from labhop.session.walltime import Warnings
from labhop.ssh.connection import Connection
from labhop.ui import UI

_LOGGER = debuglog.get(__name__)


LIVENESS_CHECK_S = 2.0


# Capped low: once the network is back, the tunnel should be back within seconds.
RECONNECT_BACKOFF_S = (1, 2, 3, 5)


# How often a running session looks at the server (or job) behind the tunnel.
SERVER_CHECK_S = 15.0


# A job found gone within this much of the end its last check foresaw reached its walltime
# (Slurm forgets a finished job's state after MinJobAge, which a site may set to seconds).
WALLTIME_SLACK_S = 30.0


class ServerStopped(Exception):
    """The server was stopped through labhop (its state entry is gone: `labhop stop` from
    another terminal or laptop) while this labhop was attached: the session ends well."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass
class KeepAlive:
    conn: Connection
    backend: Backend
    tunnel: LocalTunnel
    ui: UI
    host: str
    url: Callable[[], str]
    # Connected again, before any local port opens: the old port's token is withdrawn.
    on_reconnecting: Callable[[], None]
    # The tunnel is back; whether the server's own port moved (the ownership mark).
    on_reconnected: Callable[[bool], None]
    walltime: Warnings = field(default_factory=Warnings)
    # The end the last check foresaw (time.monotonic()), for a job gone without a state.
    foreseen_end: float | None = None
    # While the connection is too busy to answer (see _busy): said once, not per check.
    busy_since: float | None = None

    def run(self, server: Server) -> NoReturn:
        """Until the server ends (ServerStopped, ServerEndedError) or a signal interrupts."""
        next_server_check = time.monotonic() + SERVER_CHECK_S
        while True:
            time.sleep(LIVENESS_CHECK_S)
            try:
                if not self._connected():
                    self.reconnect(server)
                if time.monotonic() >= next_server_check:
                    next_server_check = time.monotonic() + SERVER_CHECK_S
                    self._check_health(server)
                self._answering()
            except MasterBusyError as exc:
                self._busy(exc)
            except SSHError as exc:
                # A check that was under way when the network dropped fails once the
                # master gives up; that is a lost connection, not a reason to quit.
                _LOGGER.debug("check failed: %s", exc)
                try:
                    if not self._connected():
                        self.reconnect(server)
                except MasterBusyError as busy:
                    self._busy(busy)

    def _connected(self) -> bool:
        return self.tunnel.holds() and self.conn.is_alive()

    def _busy(self, exc: MasterBusyError) -> None:
        """The connection does not answer in time (a neighbour flooding the forwarded port,
        the master out of file descriptors): a state to report and wait out, never a
        reason to reconnect over it or to stop the server."""
        if self.busy_since is None:
            self.busy_since = time.monotonic()
            self.ui.warn(f"the connection to {self.host} is not answering ({exc}); the "
                         "server keeps running, labhop waits for the connection")
            self.ui.event("busy", host=self.host)

    def _answering(self) -> None:
        if self.busy_since is not None:
            self.ui.info(f"the connection to {self.host} answers again, after "
                         f"{time.monotonic() - self.busy_since:.0f} s")
            self.ui.event("answering", host=self.host)
            self.busy_since = None

    def _check_health(self, server: Server) -> None:
        health = self.backend.health(server)
        if not health.alive:
            if health.known and self._reached_walltime(health):
                raise WalltimeReachedError(**with_log(self.backend.walltime_message(server),
                                                      log_tail(self.backend, server)))
            self._ended(server, health.known, self.backend.ended_message(server, self.host))
        left = health.time_left_s
        if left is not None:
            self.foreseen_end = time.monotonic() + left
        mark = self.walltime.due(left)
        if mark is not None and left is not None:
            now = datetime.now().astimezone()
            ends = walltime.end_time(left, now)
            self.ui.warn(f"{self.backend.ending_soon_message(left)} (it ends at "
                         f"{walltime.clock(ends, now)})")
            self.ui.event("walltime", time_left_s=left, ends_at=walltime.iso(ends),
                          warning_s=mark)

    def _reached_walltime(self, health: Health) -> bool:
        if health.ended_as:
            return health.ended_as == "TIMEOUT"
        return (self.foreseen_end is not None
                and time.monotonic() >= self.foreseen_end - WALLTIME_SLACK_S)

    def _require_running(self, server: Server, gone: str) -> None:
        status = self.backend.status(server.name)
        if not status.alive:
            self._ended(server, status.known, gone)

    def _ended(self, server: Server, known: bool, message: str) -> NoReturn:
        """The server is not running: stopped through labhop (its state entry is gone),
        or ended by itself (the entry stays, with its log)."""
        if not known:
            raise ServerStopped(server.name)
        raise ServerEndedError(**with_log(message, log_tail(self.backend, server)))

    def reconnect(self, server: Server) -> None:
        self.ui.warn(f"lost the connection to {self.host}; the server keeps running there. "
                     "Reconnecting…")
        self.ui.event("reconnecting", host=self.host)
        self.tunnel.close()
        attempt = 0
        while True:
            delay = RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)]
            attempt += 1
            self._countdown(delay, attempt)
            try:
                self.conn.reopen()
                self._require_running(server, f"reconnected to {self.host}, but "
                                              f"'{server.name}' has ended there meanwhile")
                self.on_reconnecting()
                forward_host, where = self.backend.forward_host(server)
                # The whole set of forwards, the server's and each --forward, as before.
                moved = self.tunnel.open(server.forward_target(), forward_host)
                self.on_reconnected(any(end.forward is None for end, _ in moved))
            except SSHError as exc:
                self.tunnel.close()
                self.ui.warn(f"reconnect attempt {attempt} failed: {exc}")
                continue
            for end, old_port in moved:
                # Someone else took the port while the connection was down: the old URL
                # now leads to them, so the token never goes there again.
                shown = self.url() if end.forward is None else forward_line(end, where).strip()
                self.ui.warn(f"local port {old_port} was taken while the connection was "
                             f"down; moved to {end.port}: {shown}")
            self.ui.done(f"reconnected; {self.url()} works again")
            # moved: the server's own URL changed; each --forward as it is now.
            self.ui.event("reconnected", url=self.url(), port=self.tunnel.port,
                          moved=any(end.forward is None for end, _ in moved),
                          forwards=[forward_fields(end, where)
                                    for end in self.tunnel.extra_ends])
            return

    def _countdown(self, seconds: int, attempt: int) -> None:
        if not self.ui.interactive:
            self.ui.info(f"reconnecting (attempt {attempt}) in {seconds} s")
            time.sleep(seconds)
            return
        with self.ui.spinner(f"reconnecting (attempt {attempt}) in {seconds} s"):
            for remaining in range(seconds, 0, -1):
                self.ui.step(f"reconnecting (attempt {attempt}) in {remaining} s")
                time.sleep(1)

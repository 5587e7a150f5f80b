"""The supervisor of `labhop HOST` (start) and `labhop attach HOST` (attach).

A session goes through its phases in order, each in a module of its own:

    connection  acquire the host's shared connection; the signal policy (`connection`)
    server      launch one (start) or find the running one (attach)  (`backends`)
    tunnel      a local port that labhop's own ssh holds             (`tunnel`)
    readiness   wait until the server answers through it             (`readiness`)
    keep-alive  reconnect after a drop, notice a server that ended   (`keepalive`)
    cleanup     stop what this session started, or leave it running

It knows the steps, not shell syntax (`remote`) nor ssh flags (`ssh`).

"""

from __future__ import annotations

import abc
import getpass
import os
import secrets
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

from labhop import model, opening, oscompat
from labhop.backends.base import (
    Backend,
    BackendOptions,
    Ownership,
    Server,
)
from labhop.errors import (
    ExitStatus,
    LabhopError,
    ServerEndedError,
    SocketForwardingRefusedError,
)
from labhop.model import APP_TABLE, DEFAULT_APP, Forward
from labhop.session import browser, walltime
from labhop.session.keepalive import KeepAlive, ServerStopped
from labhop.session.readiness import Readiness
from labhop.session.tunnel import (
    LocalTunnel,
    check_requested_ports,
    forward_fields,
    forward_line,
    local_ends,
)
from labhop.ssh import ports, proc
from labhop.ssh.connection import Connection, connected
from labhop.ssh.signals import Interrupted, InterruptPolicy
from labhop.ssh.target import Target
from labhop.ui import UI


@dataclass(frozen=True)
class StartRequest:
    target: Target
    app: str = DEFAULT_APP
    env: model.EnvSpec | None = None
    root_dir: str = ""
    name: str = ""
    port: int | None = None
    forwards: tuple[Forward, ...] = ()  # --forward: more ports, beside the server's own
    open_browser: bool = True
    keep: bool = False
    idle_timeout: int = 0
    start_timeout: float = 120.0
    jupyter_args: tuple[str, ...] = field(default_factory=tuple)
    # Run as a Slurm batch job with these sbatch options (HOST is the login node).
    slurm: tuple[str, ...] | None = None
    queue_timeout: float = 900.0
    # Seconds before a job's walltime ends at which the session warns, largest first.
    walltime_warnings: tuple[int, ...] = walltime.DEFAULT_WARNINGS_S
    gpus: str = ""  # --gpus as typed (checked by gpus.parse_gpu_selection); "" = not given
    open_path: str = ""  # PATH, as opening.normalize made it; "" = the app's start page
    # --detach: return once the server answers, leaving it running (as --keep) and no
    # tunnel nor labhop process here.
    detach: bool = False
    # --detach --no-wait (Slurm only): return once the job is queued (see StartSession).
    no_wait: bool = False


def default_name(root_dir: str) -> str:
    """Servers are named after their root directory, so the same --dir finds the same one."""
    base = PurePosixPath(root_dir.rstrip("/")).name if root_dir.strip("/~") else ""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in base).strip("-.")
    return cleaned or "home"


class Session(abc.ABC):
    """What start and attach share: the phases after the server is known."""

    def __init__(self, request: StartRequest, ui: UI) -> None:
        self.request = request
        self.ui = ui
        self.conn: Connection | None = None
        self.backend: Backend | None = None
        self.server: Server | None = None
        self.tunnel: LocalTunnel | None = None
        self.ownership: Ownership | None = None
        # This labhop's session with the server (see Backend.hold_ownership), and the token
        # its browser gets: good only while this labhop holds the port it went out on.
        self.session_id = secrets.token_hex(8)
        self.browser_token = secrets.token_hex(24)
        self.ready = False
        # Whether the server is gone when the session ends (the `stopped` event).
        self.stopped_server = False
        # It ended behind our back (stopped elsewhere, its idle timeout, a crash): there is
        # nothing left to stop, nor to say that it keeps running.
        self.server_gone = False

    # -- the phases a subclass provides ----------------------------------------------------
    @abc.abstractmethod
    def _obtain_server(self) -> Server:
        """Launch the server (start) or find the running one (attach)."""

    def _after_ready(self) -> None:  # noqa: B027 -- a hook; attach shows nothing more
        """Anything to show once the URL is out (the GPUs of a new server)."""

    def _stops_server(self) -> bool:
        """Whether Ctrl+C stops the server (a start without --keep) or leaves it running."""
        return False

    def _stop_unfinished_launch(self) -> None:  # noqa: B027 -- a hook; attach launched nothing
        """Interrupted before the launch answered: undo what it may have started."""

    # -- the whole run ------------------------------------------------------------------
    def run(self) -> int:
        policy = InterruptPolicy(on_busy=lambda: self.ui.warn(
            "still cleaning up; press Ctrl+C again to leave the server running"))
        # A local port asked for that is taken now: say so before any server is started.
        check_requested_ports(local_ends(
            self.request.port, self.request.forwards, host=self._host()))
        try:
            with connected(self.request.target, progress=self.ui.step,
                           policy=policy) as conn:
                self.conn = conn
                self.tunnel = LocalTunnel(conn, self.ui, host=self._host(),
                                          port=self.request.port,
                                          forwards=self.request.forwards)
                try:
                    self._serve()
                except Interrupted:
                    pass
                except ServerStopped:
                    self.server_gone = self.stopped_server = True
                    self.ui.info(f"'{self._name()}' was stopped on {self._host()} (labhop "
                                 "stop, from another terminal or laptop); nothing of it is "
                                 "left running there")
                except ServerEndedError:
                    self.server_gone = True
                    self._cleanup()
                    raise
                except BaseException:
                    self._cleanup()
                    raise
                was_ready = self.ready
                self._cleanup(note="" if was_ready else
                              "interrupted before the server was ready")
                if not was_ready:
                    return ExitStatus.INTERRUPTED
                self.ui.event("stopped", name=self._name(), host=self._host(),
                              server_running=not self.stopped_server)
                return ExitStatus.OK
        except Interrupted:
            # While connecting (at a password prompt, say): nothing was started yet.
            return ExitStatus.INTERRUPTED

    def _serve(self) -> None:
        self.server = self._obtain_server()
        self._open_tunnel()
        self.server = self._readiness().wait(self.server,
                                             relaunch_over_tcp=self._relaunch_over_tcp)
        self.ready = True
        if self.request.detach:
            self._announce_detached()
            return  # the cleanup closes the tunnel and says how to reattach
        self._hold_ownership()
        self._announce()
        KeepAlive(self._conn(), self._backend(), self._tunnel(), self.ui, self._host(),
                  url=self.url, on_reconnecting=self._withdraw_token,
                  on_reconnected=self._reattach,
                  walltime=walltime.Warnings(self.request.walltime_warnings)).run(self.server)

    def _preferred_port(self) -> int:
        """The server's own port, derived from (host, name) (see ports.preferred_port)."""
        return ports.preferred_port(self._host(), self._name())

    def _open_tunnel(self) -> None:
        assert self.server is not None
        end = self._tunnel().server_end
        if end.port is None and end.requested is None:
            end.first_choice = self._preferred_port()
        self._tunnel().open(self.server.forward_target(),
                            self._backend().forward_host(self.server)[0])

    def _readiness(self) -> Readiness:
        return Readiness(self._backend(), self._tunnel(), self.ui, self._host(),
                         APP_TABLE[self.request.app].label, self.request.start_timeout)

    def _relaunch_over_tcp(self) -> Server:
        """The sshd refuses Unix-socket forwarding: only a start can move its server to
        TCP (see StartSession); a running server is left as it is."""
        assert self.server is not None
        raise SocketForwardingRefusedError(
            f"{self._host()}'s sshd refuses to forward to Unix sockets "
            "(AllowStreamLocalForwarding no), and '{name}' listens on one, so it cannot be "
            "reached from here; stop it ({stop}) and start it again: a new start uses TCP "
            "on the host's loopback instead".replace("{name}", self.server.name).replace(
                "{stop}", self.request.target.command("stop", after=(self.server.name,))))

    def _hold_ownership(self, token: str | None = None) -> None:
        """While we run, `labhop ls` shows the server as attached (and whose it is), and
        `token` (this session's browser token unless given) opens it."""
        assert self.server is not None
        if self.ownership is not None:
            proc.release(self.ownership.child, timeout=2)
            self.ownership = None
        client = f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}"
        self.ownership = self._backend().hold_ownership(
            self.server.name, client, self.session_id,
            self.browser_token if token is None else token)

    def _withdraw_token(self) -> None:
        """Reconnecting: before any local port opens again, the token that went out with
        the old one stops opening the server (this session's earlier owner, which a
        dropped connection leaves behind on the host, ends with it)."""
        self._hold_ownership(token="")

    def _reattach(self, moved: bool) -> None:
        """Connected again. On the same port the open tab keeps working; on another, the
        old port may lead to someone else, so the URL gets a new token."""
        if moved:
            self.browser_token = secrets.token_hex(24)
        self._hold_ownership()

    def _token(self) -> str:
        """The token the browser gets: this session's own, or the server's own where the
        server takes no other (Jupyter without jupyter_server 2's IdentityProvider)."""
        assert self.server is not None
        if self.ownership is not None and self.ownership.browser_tokens:
            return self.browser_token
        return self.server.token

    def url(self, *, first: bool = False) -> str:
        """The URL with the token; `first` is the one printed and opened at ready, which
        opens the PATH asked for (a URL after a reconnect is the app's start page)."""
        assert self.server is not None and self._tunnel().port is not None
        path = APP_TABLE[self.request.app].path
        if first and self.server.open_kind:
            path = opening.url_path(self.request.app, self.server.open_path,
                                    self.server.open_kind)
        return f"http://127.0.0.1:{self._tunnel().port}{path}?token={self._token()}"

    def _announce(self) -> None:
        assert self.server is not None
        backend = self._backend()
        label = APP_TABLE[self.request.app].label
        self.ui.done(f"{label} is ready on {self._host()} "
                     f"(server '{self.server.name}', {backend.where(self.server)})")
        self.ui.result(self.url(first=True))
        where = backend.forward_host(self.server)[1]
        for end in self._tunnel().extra_ends:
            self.ui.result(forward_line(end, where))
        port = self._tunnel().port
        now = datetime.now().astimezone()
        left = backend.time_left(self.server)
        ends = walltime.end_time(left, now) if left is not None else None
        # server_url: the server's root, which editors take as an "existing server" (some
        # find no kernels behind the app's path, /lab). ends_at: a job's walltime end.
        self.ui.event("ready", url=self.url(first=True), port=port, token=self._token(),
                      host=self._host(), name=self.server.name,
                      pid=int(self.server.pid) if self.server.pid.isdigit() else self.server.pid,
                      app=self.request.app,
                      server_url=f"http://127.0.0.1:{port}/?token={self._token()}",
                      forwards=[forward_fields(end, where)
                                for end in self._tunnel().extra_ends],
                      time_left_s=left, ends_at=walltime.iso(ends) if ends else None)
        if self.request.open_browser:
            if oscompat.has_display():
                page = browser.write_redirect_file(self._run_dir(), self.url(first=True))
                if not browser.open_browser(page):
                    self.ui.info("could not open a browser; open the URL above yourself")
            else:
                self.ui.info("no display here, so no browser; open the URL above")
        self._after_ready()
        if left is not None and ends is not None:
            self.ui.info(walltime.limit_line(backend.where(self.server), left, ends, now,
                                             self.request.walltime_warnings))
        if self._stops_server():
            self.ui.info("Press Ctrl+C to stop the server and its kernels.")
        else:
            self.ui.info("Press Ctrl+C to close the tunnel (the server keeps running).")

    def _announce_detached(self) -> None:
        """--detach: the server answers; say so, and go (no tunnel, no labhop stays)."""
        assert self.server is not None
        label = APP_TABLE[self.request.app].label
        self.ui.done(f"{label} is running on {self._host()} (server '{self.server.name}', "
                     f"{self._backend().where(self.server)}); no tunnel stays here")
        self.ui.event("ready", host=self._host(), name=self.server.name,
                      pid=int(self.server.pid) if self.server.pid.isdigit() else self.server.pid,
                      app=self.request.app,
                      attach=self.request.target.command("attach", after=(self.server.name,)))

    # -- cleanup --------------------------------------------------------------------------
    def _cleanup(self, note: str = "") -> None:
        try:
            if note:
                self.ui.warn(note)
            if self.tunnel is not None:
                self.tunnel.close()
            if self.ownership is not None:
                proc.release(self.ownership.child, timeout=2)
            if self.backend is None:
                return
            if self.server is None:
                self._stop_unfinished_launch()
            elif self.server_gone:
                pass
            elif self._stops_server():
                self._stop(self.server.name)
            else:
                self.ui.info(f"'{self.server.name}' keeps running on {self._host()}; "
                             "reattach with: " + self.request.target.command(
                                 "attach", after=(self.server.name,)))
        except Interrupted:
            self._say_what_is_left()

    def _say_what_is_left(self) -> None:
        """The cleanup was cut short (Ctrl+C pressed again and again): look, once, whether
        the server still runs, and say that, rather than what may have happened."""
        if self.stopped_server or self.server_gone or self.backend is None:
            return  # what happened was said already
        name = self._name()
        stop = self.request.target.command("stop", after=(name,))
        try:
            alive = self._backend().status(name).alive
        except (LabhopError, Interrupted):
            self.ui.warn(f"could not tell whether '{name}' still runs on {self._host()}; "
                         f"look with: {self.request.target.command('ls')}, and stop it "
                         f"with: {stop}")
            return
        if alive:
            self.ui.warn(f"left the server running; stop it later with: {stop}")
        else:
            self.stopped_server = True
            self.ui.done(f"'{name}' has stopped; nothing left running on {self._host()}")

    def _stop(self, name: str, *, expect_id: str = "") -> None:
        """Stop through the connection, never through the local port: SIGTERM is
        Jupyter's own clean shutdown (kernels shut down, files removed), and a port that
        our ssh no longer holds may lead to someone else."""
        with self.ui.spinner(f"stopping '{name}'"):
            try:
                output = self._backend().stop(name, expect_id=expect_id)
            except LabhopError as exc:
                self.ui.warn(f"could not confirm that '{name}' stopped: {exc}")
                return
        if output.get("known") == "1":
            self.stopped_server = True
            self.ui.done(f"stopped '{name}'; nothing left running on {self._host()}")

    # -- small helpers --------------------------------------------------------------------
    def _name(self) -> str:
        if self.server is not None:
            return self.server.name
        return self.request.name or default_name(self.request.root_dir)

    def _host(self) -> str:
        return self.request.target.host

    def _conn(self) -> Connection:
        assert self.conn is not None
        return self.conn

    def _backend(self) -> Backend:
        assert self.backend is not None
        return self.backend

    def _tunnel(self) -> LocalTunnel:
        assert self.tunnel is not None
        return self.tunnel

    def _run_dir(self) -> Path:
        assert self.conn is not None and self.conn.run_dir is not None
        return self.conn.run_dir

    def _backend_options(self) -> BackendOptions:
        return BackendOptions(queue_timeout=self.request.queue_timeout, progress=self.ui.step,
                              event=self.ui.event)

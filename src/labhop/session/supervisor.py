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
import dataclasses
import getpass
import os
import secrets
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from labhop import __version__, gpus, model, opening, oscompat
from labhop.backends.base import (
    Backend,
    BackendOptions,
    Server,
    backend_for_entry,
    backend_for_launch,
    server_from_entry,
)
from labhop.errors import ExitStatus, LabhopError, RemoteError, SocketForwardingRefusedError
from labhop.model import APP_TABLE, DEFAULT_APP, Forward
from labhop.remote import jupyter
from labhop.session import browser, gpu_summary
from labhop.session.keepalive import KeepAlive
from labhop.session.readiness import Readiness
from labhop.session.tunnel import (
    LocalTunnel,
    check_requested_ports,
    forward_fields,
    forward_line,
    local_ends,
)
from labhop.ssh import proc
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
    gpus: str = ""  # --gpus as typed (checked by gpus.parse_gpu_selection); "" = not given
    open_path: str = ""  # PATH, as opening.normalize made it; "" = the app's start page


def default_name(root_dir: str) -> str:
    """Servers are named after their root directory, so the same --dir finds the same one."""
    base = PurePosixPath(root_dir.rstrip("/")).name if root_dir.strip("/~") else ""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in base).strip("-.")
    return cleaned or "home"


def start(request: StartRequest, ui: UI) -> int:
    """`labhop HOST`: launch a server (or attach to the one of that name) and supervise it."""
    return StartSession(request, ui).run()


def attach(request: StartRequest, ui: UI) -> int:
    """`labhop attach HOST [NAME]`: tunnel to a running server; it keeps running after."""
    return AttachSession(request, ui).run()


class Session(abc.ABC):
    """What start and attach share: the phases after the server is known."""

    def __init__(self, request: StartRequest, ui: UI) -> None:
        self.request = request
        self.ui = ui
        self.conn: Connection | None = None
        self.backend: Backend | None = None
        self.server: Server | None = None
        self.tunnel: LocalTunnel | None = None
        self.ownership: subprocess.Popen[str] | None = None
        self.ready = False
        # Whether this session stopped the server when it ended (the `stopped` event).
        self.stopped_server = False

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
        self._hold_ownership()
        self._announce()
        KeepAlive(self._conn(), self._backend(), self._tunnel(), self.ui, self._host(),
                  url=self.url, on_reconnected=self._hold_ownership).run(self.server)

    def _open_tunnel(self) -> None:
        assert self.server is not None
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

    def _hold_ownership(self) -> None:
        """While we run, `labhop ls` shows the server as attached (and whose it is)."""
        assert self.server is not None
        if self.ownership is not None:
            proc.release(self.ownership, timeout=2)
        client = f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}"
        self.ownership = self._backend().hold_ownership(self.server.name, client)

    def url(self, *, first: bool = False) -> str:
        """The URL with the token; `first` is the one printed and opened at ready, which
        opens the PATH asked for (a URL after a reconnect is the app's start page)."""
        assert self.server is not None and self._tunnel().port is not None
        path = APP_TABLE[self.request.app].path
        if first and self.server.open_kind:
            path = opening.url_path(self.request.app, self.server.open_path,
                                    self.server.open_kind)
        return f"http://127.0.0.1:{self._tunnel().port}{path}?token={self.server.token}"

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
        # server_url: the server's root, which editors take as an "existing server" (some
        # find no kernels behind the app's path, /lab).
        self.ui.event("ready", url=self.url(first=True), port=port, token=self.server.token,
                      host=self._host(), name=self.server.name,
                      pid=int(self.server.pid) if self.server.pid.isdigit() else self.server.pid,
                      app=self.request.app,
                      server_url=f"http://127.0.0.1:{port}/?token={self.server.token}",
                      forwards=[forward_fields(end, where)
                                for end in self._tunnel().extra_ends])
        if self.request.open_browser:
            if oscompat.has_display():
                page = browser.write_redirect_file(self._run_dir(), self.url(first=True))
                if not browser.open_browser(page):
                    self.ui.info("could not open a browser; open the URL above yourself")
            else:
                self.ui.info("no display here, so no browser; open the URL above")
        self._after_ready()
        time_limit = backend.time_limit_line(self.server)
        if time_limit:
            self.ui.info(time_limit)
        if self._stops_server():
            self.ui.info("Press Ctrl+C to stop the server and its kernels.")
        else:
            self.ui.info("Press Ctrl+C to close the tunnel (the server keeps running).")

    # -- cleanup --------------------------------------------------------------------------
    def _cleanup(self, note: str = "") -> None:
        try:
            if note:
                self.ui.warn(note)
            if self.tunnel is not None:
                self.tunnel.close()
            if self.ownership is not None:
                proc.release(self.ownership, timeout=2)
            if self.backend is None:
                return
            if self.server is None:
                self._stop_unfinished_launch()
            elif self._stops_server():
                self._stop(self.server.name)
            else:
                self.ui.info(f"'{self.server.name}' keeps running on {self._host()}; "
                             "reattach with: " + self.request.target.command(
                                 "attach", after=(self.server.name,)))
        except Interrupted:
            self.ui.warn("left the server running; stop it later with: "
                         + self.request.target.command("stop", after=(self._name(),)))

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
        return BackendOptions(queue_timeout=self.request.queue_timeout, progress=self.ui.step)


class StartSession(Session):
    """`labhop HOST`: launch the server (or find the one running under that name)."""

    def __init__(self, request: StartRequest, ui: UI) -> None:
        super().__init__(request, ui)
        self.owns_server = False
        # The id of a launch whose answer has not arrived yet (see _stop_unfinished_launch).
        self.pending_id = ""
        # --gpus resolved against the host's GPUs (and the report it came from).
        self.gpu_choice: tuple[gpus.GpuChoice, gpus.GpuReport] | None = None

    def _obtain_server(self) -> Server:
        self.backend = backend_for_launch(self._conn(), slurm_args=self.request.slurm,
                                          options=self._backend_options())
        return self._launch("unix")

    def _launch(self, transport: str) -> Server:
        request = self.request
        name = self._name()
        where = f" in {request.env}" if request.env else ""
        label = APP_TABLE[request.app].label
        # Before the id is pending: a --gpus the host cannot meet fails here, and then
        # nothing was launched that a cleanup would have to stop (or say it stops).
        cuda_visible_devices = self._cuda_visible_devices()
        self.pending_id = secrets.token_hex(8)
        launch = jupyter.LaunchRequest(
            name=name,
            server_id=self.pending_id,
            token=secrets.token_hex(24),
            app=request.app,
            env=request.env,
            root_dir=request.root_dir,
            local_home=str(Path.home()),
            transport=transport,
            idle_timeout=request.idle_timeout,
            jupyter_args=request.jupyter_args,
            record=self._launch_record(name),
            cuda_visible_devices=cuda_visible_devices,
            open_path=request.open_path,
        )
        with self.ui.spinner(f"starting {label}{where} as '{name}'"):
            try:
                server = self._backend().launch(launch)
            except RemoteError:
                self.pending_id = ""  # the script failed and cleaned up after itself
                raise
        self.pending_id = ""
        if server.note:
            self.ui.info(server.note)
        if server.existing:
            self.ui.info(f"'{name}' is already running on {self._host()} "
                         f"({self._backend().where(server)}); attaching to it")
            if request.gpus:
                self.gpu_choice = None  # it keeps the GPUs it was started with
                self.ui.warn(f"--gpus does not change a running server; stop '{name}' "
                             "first to start it on other GPUs")
        else:
            self.owns_server = True
        return server

    def _relaunch_over_tcp(self) -> Server:
        assert self.server is not None
        self._tunnel().close()
        self._backend().stop(self.server.name)
        self.server = self._launch("tcp")
        self._open_tunnel()
        return self.server

    def _launch_record(self, name: str) -> dict[str, object]:
        request = self.request
        return {
            "name": name,
            "backend": self._backend().kind,
            "app": request.app,
            "env": str(request.env) if request.env else "",
            "root_dir": request.root_dir,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "idle_timeout": request.idle_timeout,
            "client": f"{getpass.getuser()}@{socket.gethostname()}",
            "client_pid": os.getpid(),
            "keep": request.keep,
            "labhop": __version__,
            "jupyter_args": list(request.jupyter_args),
        }

    def _cuda_visible_devices(self) -> str:
        """CUDA_VISIBLE_DEVICES for --gpus, checked against the host's GPUs first."""
        spec = self.request.gpus
        if not spec:
            return ""
        if self.gpu_choice is None:
            with self.ui.spinner(f"checking the GPUs for --gpus {spec}"):
                self.gpu_choice = gpu_summary.resolve_gpus(self._backend(), spec, self._host())
        return self.gpu_choice[0].cuda_visible_devices

    def _after_ready(self) -> None:
        """The GPUs the server uses, and one line if one of them is nearly full or busy."""
        if self.ui.quiet and self.gpu_choice is None:
            return  # only the query for the warning; skip it when nothing would show
        summary = gpu_summary.gpu_summary(self._backend(), self._host(), self.gpu_choice)
        if summary is None:
            return
        self.ui.table(gpus.GPU_HEADERS, summary.rows, to_stderr=True)
        if summary.warning:
            self.ui.warn(summary.warning)

    def _stops_server(self) -> bool:
        return self.owns_server and not self.request.keep

    def _stop_unfinished_launch(self) -> None:
        # The launch script may have started the server anyway. Stop it only if it is the
        # one this run launched (its id matches).
        if self.pending_id:
            self._stop(self._name(), expect_id=self.pending_id)


class AttachSession(Session):
    """`labhop attach HOST [NAME]`: the server runs already, and keeps running after."""

    def _obtain_server(self) -> Server:
        # Any backend reads the state directory; the server's own record says which one
        # runs it (only Slurm can say whether a job is alive).
        finder = backend_for_launch(self._conn(), slurm_args=None)
        entry = finder.find(self.request.name, with_token=True)
        self.backend = backend_for_entry(self._conn(), entry, self._backend_options())
        server = server_from_entry(entry)
        self.ui.info(f"attaching to '{entry.name}' on {self._host()} "
                     f"({self.backend.where(server)})")
        self.request = dataclasses.replace(
            self.request, app=str(entry.record.get("app") or DEFAULT_APP), name=entry.name)
        return server

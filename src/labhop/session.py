"""The supervisor: connect, launch or attach, forward, wait until ready, open the browser,
keep the tunnel alive, and on Ctrl+C leave nothing running.

It knows the steps, not shell syntax (`remote`) nor ssh flags (`ssh`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import logging
import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from labhop import __version__, commands, gpus, local, oscompat, proc, remote, server_api, slurm
from labhop.backends import HostBackend, Server, SlurmBackend, server_from_entry
from labhop.connection import Connection, Interrupted, InterruptPolicy, connected
from labhop.errors import (
    ExitStatus,
    LabhopError,
    LocalPortError,
    RemoteError,
    ServerExitedError,
    SSHError,
    StartTimeoutError,
)
from labhop.ssh import Target, Tunnel
from labhop.ui import UI

_LOGGER = logging.getLogger(__name__)

APP_LABELS = {"lab": "JupyterLab", "notebook": "Jupyter Notebook", "server": "Jupyter Server"}
# How long a stream-local forward may keep failing after the socket exists before we
# conclude that sshd refuses Unix-socket forwarding and fall back to TCP.
SOCKET_REFUSED_AFTER_S = 3.0
LIVENESS_CHECK_S = 2.0
# Capped low: once the network is back, the tunnel should be back within seconds.
RECONNECT_BACKOFF_S = (1, 2, 3, 5)
# How often a running session looks at the server (or Slurm job) behind the tunnel.
SERVER_CHECK_S = 15.0
WALLTIME_WARNING_S = 600


@dataclass(frozen=True)
class StartRequest:
    target: Target
    app: str = "lab"
    env: remote.EnvSpec | None = None
    root_dir: str = ""
    name: str = ""
    port: int | None = None
    open_browser: bool = True
    keep: bool = False
    idle_timeout: int = 0
    start_timeout: float = 120.0
    jupyter_args: tuple[str, ...] = field(default_factory=tuple)
    # Run as a Slurm batch job with these sbatch options (HOST is the login node).
    slurm: tuple[str, ...] | None = None
    queue_timeout: float = 900.0
    gpus: str = ""  # --gpus as typed (checked by gpus.parse_gpu_selection); "" = not given


def default_name(root_dir: str) -> str:
    """Servers are named after their root directory, so the same --dir finds the same one."""
    base = PurePosixPath(root_dir.rstrip("/")).name if root_dir.strip("/~") else ""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in base).strip("-.")
    return cleaned or "home"


def validate_name(name: str) -> str:
    if not name or name.startswith(".") or any(not (c.isalnum() or c in "-_.") for c in name):
        raise LabhopError(
            f"bad server name {name!r}: use letters, digits, '-', '_' and '.' only"
        )
    return name


class Session:
    """One run of `labhop HOST`: owns the master connection and the forward."""

    def __init__(self, request: StartRequest, ui: UI, *, attach_only: bool = False) -> None:
        self.request = request
        self.ui = ui
        self.attach_only = attach_only
        self.conn: Connection | None = None
        self.tunnel: Tunnel | None = None
        self.backend: HostBackend | None = None
        self.server: Server | None = None
        self.local_port: int | None = None
        self.ready = False
        self.owns_server = False
        # The id of a launch whose answer has not arrived yet (see _stop_or_detach).
        self.pending_id = ""
        self.walltime_warned = False
        self.ownership: subprocess.Popen[str] | None = None
        # --gpus resolved against the host's GPUs (and the report it came from).
        self.gpu_choice: tuple[gpus.GpuChoice, gpus.GpuReport] | None = None

    # -- the whole run ----------------------------------------------------------------
    def run(self) -> int:
        policy = InterruptPolicy(on_busy=lambda: self.ui.warn(
            "still cleaning up; press Ctrl+C again to leave the server running"))
        request = self.request
        try:
            with connected(request.target, progress=self.ui.step, policy=policy) as conn:
                self.conn = conn
                try:
                    self._start()
                    self._announce()
                    self._supervise()
                except Interrupted:
                    pass
                except BaseException:
                    self._cleanup()
                    raise
                was_ready = self.ready
                self._cleanup(note="" if was_ready else
                              "interrupted before the server was ready")
                return ExitStatus.OK if was_ready else ExitStatus.INTERRUPTED
        except Interrupted:
            # While connecting (at a password prompt, say): nothing was started yet.
            return ExitStatus.INTERRUPTED

    def _start(self) -> None:
        self.backend = self._backend(self._conn())
        self.server = self._attach() if self.attach_only else self._launch("unix")
        self._forward()
        self._wait_ready()
        self._hold_ownership()

    def _backend(self, conn: Connection) -> HostBackend:
        if self.request.slurm is None:
            return HostBackend(conn)
        return SlurmBackend(conn, self.request.slurm, queue_timeout=self.request.queue_timeout,
                            progress=self.ui.step)

    def _attach(self) -> Server:
        assert self.backend is not None
        entry = self.backend.find(self.request.name, with_token=True)
        where = f"job {entry.jobid} on {entry.node}" if entry.jobid else f"pid {entry.pid}"
        self.ui.info(f"attaching to '{entry.name}' on {self.request.target.host} ({where})")
        if entry.jobid:
            # It runs as a Slurm job: only Slurm can say whether it is still alive.
            backend = SlurmBackend(self._conn(), (), queue_timeout=self.request.queue_timeout,
                                   progress=self.ui.step)
            backend.jobid = entry.jobid
            self.backend = backend
        self.request = dataclasses.replace(
            self.request, app=str(entry.record.get("app") or "lab"), name=entry.name)
        return server_from_entry(entry)

    def _hold_ownership(self) -> None:
        """While we run, `labhop ls` shows the server as attached (and whose it is)."""
        assert self.backend is not None and self.server is not None
        if self.ownership is not None:
            proc.release(self.ownership, timeout=2)
        client = f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}"
        self.ownership = self.backend.hold_ownership(self.server.name, client)

    # -- steps ------------------------------------------------------------------------
    def _launch(self, transport: str) -> Server:
        assert self.backend is not None
        request = self.request
        name = self._name()
        where = f" in {request.env}" if request.env else ""
        label = APP_LABELS[request.app]
        self.pending_id = secrets.token_hex(8)
        launch = remote.LaunchRequest(
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
            cuda_visible_devices=self._cuda_visible_devices(),
        )
        with self.ui.spinner(f"starting {label}{where} as '{name}'"):
            try:
                server = self.backend.launch(launch)
            except RemoteError:
                self.pending_id = ""  # the script failed and cleaned up after itself
                raise
        self.pending_id = ""
        if isinstance(self.backend, SlurmBackend) and self.backend.queue_wait_s is not None:
            self.ui.info(f"job {self.backend.jobid} runs on {server.node} "
                         f"(waited {self.backend.queue_wait_s:.1f} s in the queue)")
        if server.existing:
            self.ui.info(f"'{name}' is already running on {request.target.host} "
                         f"(pid {server.pid}); attaching to it")
            if request.gpus:
                self.gpu_choice = None  # it keeps the GPUs it was started with
                self.ui.warn(f"--gpus does not change a running server; stop '{name}' "
                             "first to start it on other GPUs")
        else:
            self.owns_server = not self.attach_only
        return server

    def _cuda_visible_devices(self) -> str:
        """CUDA_VISIBLE_DEVICES for --gpus, checked against the host's GPUs first."""
        spec = self.request.gpus
        if not spec:
            return ""
        if self.gpu_choice is None:
            with self.ui.spinner(f"checking the GPUs for --gpus {spec}"):
                self.gpu_choice = commands.resolve_gpus(self._conn(), spec,
                                                        self.request.target.host)
        return self.gpu_choice[0].cuda_visible_devices

    def _show_gpus(self) -> None:
        """The GPUs the server uses, and one line if one of them is nearly full or busy."""
        if self.attach_only or self.request.slurm is not None:
            return  # attach is no start; a Slurm job's GPUs are on its node, not here
        if self.ui.quiet and self.gpu_choice is None:
            return  # only the query for the warning; skip it when nothing would show
        summary = commands.gpu_summary(self._conn(), self.gpu_choice)
        if summary is None:
            return
        self.ui.table(gpus.GPU_HEADERS, summary.rows, to_stderr=True)
        if summary.warning:
            self.ui.warn(summary.warning)

    def _launch_record(self, name: str) -> dict[str, object]:
        request = self.request
        return {
            "name": name,
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

    def _forward(self) -> None:
        """Open the tunnel: on the port it had before (a reconnect), on --port, or on the
        host's stable default port, else on a free one."""
        assert self.server is not None
        remote_end = self.server.forward_target()
        explicit = self.request.port
        if self.local_port is None and explicit is not None:
            if not local.port_is_free(explicit):
                raise LocalPortError(
                    f"local port {explicit} is already in use; pick another --port or leave "
                    "it out to get a free one"
                )
            self.tunnel = self._conn().transport.open_tunnel(explicit, remote_end)
            self.local_port = explicit
            return
        wanted = self.local_port or local.preferred_port(self.request.target.host)
        port = wanted
        for attempt in range(5):
            if attempt or not local.port_is_free(port):
                port = local.any_free_port()
            try:
                self.tunnel = self._conn().transport.open_tunnel(port, remote_end)
            except LocalPortError:
                continue
            moved = self.local_port is not None and port != wanted
            if port != wanted and not moved:
                self.ui.info(f"local port {wanted} is busy; using {port} instead")
            self.local_port = port
            if moved:
                # Someone else took the port while the connection was down: the old URL
                # now leads to them, so the token never goes there again.
                self.ui.warn(f"local port {wanted} was taken while the connection was down; "
                             f"moved to {port}: {self.url()}")
            return
        raise LocalPortError("could not find a free local port for the tunnel; retry, or "
                             "pass --port N")

    def _close_tunnel(self) -> None:
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None

    def _holds_tunnel(self) -> bool:
        """Whether our own ssh listens on the local port right now (see ssh.Tunnel)."""
        return self.tunnel is not None and self.tunnel.holds()

    def _wait_ready(self) -> None:
        assert self.server is not None and self.backend is not None
        label = APP_LABELS[self.request.app]
        started = time.monotonic()
        deadline = started + self.request.start_timeout
        next_check = started
        listening = False
        hung_up_since: float | None = None
        with self.ui.spinner(f"waiting for {label} to answer"):
            while True:
                now = time.monotonic()
                if not self._holds_tunnel():
                    raise SSHError(f"lost the connection to {self.request.target.host} while "
                                   f"{label} was starting; check the network and retry")
                result = server_api.probe(self._port(), self._token(), timeout=5)
                if result == "ok":
                    break
                if now >= next_check:
                    next_check = now + 1.0
                    listening = self._check_alive_during_start(label)
                # The socket is there, yet the tunnel hangs up on every connection at
                # once: this sshd refuses to forward to Unix sockets.
                if result == "closed" and listening and self.server.transport == "unix":
                    hung_up_since = hung_up_since or now
                    if now - hung_up_since > SOCKET_REFUSED_AFTER_S:
                        self._fall_back_to_tcp()
                        listening, hung_up_since = False, None
                        continue
                else:
                    hung_up_since = None
                if now >= deadline:
                    raise StartTimeoutError(
                        f"{label} did not answer within {self.request.start_timeout:.0f} s "
                        f"on {self.request.target.host}; raise --timeout if the host is slow. "
                        "The last lines of its log:",
                        details=self._log_tail(),
                    )
                time.sleep(0.1)
        self.ready = True
        _LOGGER.debug("ready after %.2f s of waiting", time.monotonic() - started)

    def _check_alive_during_start(self, label: str) -> bool:
        """Raise if the server died; return whether its socket exists yet."""
        assert self.server is not None and self.backend is not None
        status = self.backend.status(self.server.name)
        if not status.alive:
            raise ServerExitedError(
                f"{label} exited during start-up on {self.request.target.host}; "
                "the last lines of its log:",
                details=self._log_tail(),
            )
        return bool(status.listening)

    def _fall_back_to_tcp(self) -> None:
        assert self.server is not None and self.backend is not None
        self.ui.warn(f"{self.request.target.host}'s sshd refuses Unix-socket forwarding "
                     "(AllowStreamLocalForwarding); using TCP on its loopback instead")
        self._close_tunnel()
        self.backend.stop(self.server.name, grace_s=0)
        self.server = self._launch("tcp")
        self._forward()

    def _token(self) -> str:
        assert self.server is not None
        return self.server.token

    def _log_tail(self) -> str:
        assert self.backend is not None and self.server is not None
        with contextlib.suppress(LabhopError):
            return self.backend.status(self.server.name, with_log=True).log
        return ""

    def url(self) -> str:
        assert self.server is not None
        path = server_api.app_path(self.request.app)
        return f"http://127.0.0.1:{self._port()}{path}?token={self.server.token}"

    def _announce(self) -> None:
        assert self.server is not None
        label = APP_LABELS[self.request.app]
        self.ui.done(f"{label} is ready on {self.request.target.host} "
                     f"(server '{self.server.name}', pid {self.server.pid})")
        self.ui.result(self.url())
        if self.request.open_browser:
            if oscompat.has_display():
                page = local.write_redirect_file(self._run_dir(), self.url())
                if not local.open_browser(page):
                    self.ui.info("could not open a browser; open the URL above yourself")
            else:
                self.ui.info("no display here, so no browser; open the URL above")
        stop_hint = "stop the server and its kernels"
        if self.request.keep or not self.owns_server:
            stop_hint = "close the tunnel (the server keeps running)"
        self._show_gpus()
        if isinstance(self.backend, SlurmBackend):
            self._announce_walltime()
        self.ui.info(f"Press Ctrl+C to {stop_hint}.")

    # -- keep-alive -------------------------------------------------------------------
    def _supervise(self) -> None:
        next_server_check = time.monotonic() + SERVER_CHECK_S
        while True:
            time.sleep(LIVENESS_CHECK_S)
            try:
                if not self._holds_tunnel() or not self._conn().is_alive():
                    self._reconnect()
                if time.monotonic() >= next_server_check:
                    next_server_check = time.monotonic() + SERVER_CHECK_S
                    if isinstance(self.backend, SlurmBackend):
                        self._check_walltime()
                    else:
                        self._check_server_alive()
            except SSHError as exc:
                # A check that was under way when the network dropped fails once the
                # master gives up; that is a lost connection, not a reason to quit.
                _LOGGER.debug("check failed: %s", exc)
                if not self._holds_tunnel() or not self._conn().is_alive():
                    self._reconnect()

    def _check_server_alive(self) -> None:
        """Stopped by `labhop stop` elsewhere, by its idle timeout, or crashed: say so."""
        assert self.backend is not None and self.server is not None
        if not self.backend.status(self.server.name).alive:
            raise ServerExitedError(
                f"'{self.server.name}' on {self.request.target.host} has stopped (labhop stop, "
                "its --idle-timeout, or a crash); the last lines of its log:",
                details=self._log_tail(),
            )

    def _check_walltime(self) -> None:
        """A Slurm job ends at its walltime: say so in time, and say when it happened."""
        assert self.backend is not None and self.server is not None
        status = self.backend.status(self.server.name)
        job = status.job
        if job is None:
            return
        if job.gone:
            raise ServerExitedError(
                f"the Slurm job running '{self.server.name}' has ended (walltime reached, "
                "or cancelled); the last lines of its log:",
                details=self._log_tail(),
            )
        left = job.time_left_s
        if left is not None and left <= WALLTIME_WARNING_S and not self.walltime_warned:
            self.walltime_warned = True
            self.ui.warn(f"the Slurm job ends in {slurm.format_duration(left)} (walltime); "
                         "save your work")

    def _announce_walltime(self) -> None:
        assert self.backend is not None and self.server is not None
        status = self.backend.status(self.server.name)
        left = status.job.time_left_s if status.job else None
        jobid = getattr(self.backend, "jobid", "")
        if left is None:
            self.ui.info(f"job {jobid} on {self.server.node}: no walltime limit")
        else:
            self.ui.info(f"job {jobid} on {self.server.node}: {slurm.format_duration(left)} of "
                         "walltime left; labhop warns 10 minutes before the end")

    def _reconnect(self) -> None:
        assert self.server is not None and self.backend is not None
        host = self.request.target.host
        self.ui.warn(f"lost the connection to {host}; the server keeps running there. "
                     "Reconnecting…")
        self._close_tunnel()
        attempt = 0
        while True:
            delay = RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)]
            attempt += 1
            self._countdown(delay, attempt)
            try:
                self._conn().reopen()
                status = self.backend.status(self.server.name)
            except SSHError as exc:
                self.ui.warn(f"reconnect attempt {attempt} failed: {exc}")
                continue
            if not status.alive:
                raise ServerExitedError(
                    f"reconnected to {host}, but the server '{self.server.name}' is gone; "
                    "the last lines of its log:",
                    details=self._log_tail(),
                )
            try:
                self._forward()
            except SSHError as exc:
                self.ui.warn(f"reconnect attempt {attempt} failed: {exc}")
                continue
            self._hold_ownership()
            self.ui.done(f"reconnected; {self.url()} works again")
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

    # -- cleanup ----------------------------------------------------------------------
    def _cleanup(self, note: str = "") -> None:
        try:
            if note:
                self.ui.warn(note)
            self._close_tunnel()
            if self.ownership is not None:
                proc.release(self.ownership, timeout=2)
            self._stop_or_detach()
        except Interrupted:
            self.ui.warn("left the server running; stop it later with: "
                         f"labhop stop {self.request.target.host} {self._name()}")

    def _stop_or_detach(self) -> None:
        if self.backend is None:
            return
        host = self.request.target.host
        if self.server is None:
            # Interrupted while the launch script ran: it may have started the server
            # anyway. Stop it only if it is the one this run launched (its id matches).
            if self.pending_id:
                self._stop_by_name(expect_id=self.pending_id)
            return
        if not self.owns_server or self.request.keep:
            self.ui.info(f"'{self.server.name}' keeps running on {host}; "
                         f"reattach with: labhop attach {host} {self.server.name}")
            return
        self._stop_by_name()

    def _stop_by_name(self, *, expect_id: str = "") -> None:
        """Stop through the connection, never through the local port: SIGTERM is
        Jupyter's own clean shutdown (kernels shut down, files removed), and a port that
        our ssh no longer holds may lead to someone else."""
        assert self.backend is not None
        name = self._name()
        with self.ui.spinner(f"stopping '{name}'"):
            try:
                output = self.backend.stop(name, expect_id=expect_id, grace_s=0)
            except LabhopError as exc:
                self.ui.warn(f"could not confirm that '{name}' stopped: {exc}")
                return
        if output.get("known") == "1":
            self.ui.done(f"stopped '{name}'; nothing left running on {self.request.target.host}")

    # -- small helpers ----------------------------------------------------------------
    def _name(self) -> str:
        if self.server is not None:
            return self.server.name
        return self.request.name or default_name(self.request.root_dir)

    def _conn(self) -> Connection:
        assert self.conn is not None
        return self.conn

    def _run_dir(self) -> Path:
        assert self.conn is not None and self.conn.run_dir is not None
        return self.conn.run_dir

    def _port(self) -> int:
        assert self.local_port is not None
        return self.local_port

"""The two sessions: `labhop HOST` (start: launch the server, or find the one of that name)
and `labhop attach HOST [NAME]` (the server runs already, and keeps running after). What
they share, the phases after the server is known, is `supervisor.Session`'s."""

from __future__ import annotations

import dataclasses
import getpass
import os
import secrets
import socket
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from labhop import __version__, gpus
from labhop.backends.base import (
    Backend,
    Server,
    backend_for_entry,
    backend_for_launch,
    server_from_entry,
)
from labhop.backends.slurm import Queued, SlurmBackend
from labhop.errors import (
    CommandLineError,
    RemoteError,
)
from labhop.model import APP_TABLE, DEFAULT_APP
from labhop.remote import jupyter
from labhop.remote.protocol import ProtocolError
from labhop.session import gpu_summary
from labhop.session.supervisor import Session, StartRequest
from labhop.ui import UI

T = TypeVar("T")


def start(request: StartRequest, ui: UI) -> int:
    """`labhop HOST`: launch a server (or attach to the one of that name) and supervise it."""
    return StartSession(request, ui).run()


def attach(request: StartRequest, ui: UI) -> int:
    """`labhop attach HOST [NAME]`: tunnel to a running server; it keeps running after."""
    return AttachSession(request, ui).run()


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
        self.backend = self._launch_backend()
        return self._launch("unix")

    def _launch_backend(self) -> Backend:
        return backend_for_launch(self._conn(), slurm_args=self.request.slurm,
                                  options=self._backend_options())

    def _launch(self, transport: str) -> Server:
        request = self.request
        name = self._name()
        launch = self._launch_request(name, transport)
        with self.ui.spinner(f"starting {self._what()} as '{name}'"):
            server = self._while_pending(lambda: self._backend().launch(launch))
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

    def _what(self) -> str:
        """What is started, for a progress line: "JupyterLab in conda:torch"."""
        env = self.request.env
        return APP_TABLE[self.request.app].label + (f" in {env}" if env else "")

    def _launch_request(self, name: str, transport: str) -> jupyter.LaunchRequest:
        """What the backend launches; from here on its id is pending (see _while_pending)."""
        request = self.request
        # Before the id is pending: a --gpus the host cannot meet fails here, and then
        # nothing was launched that a cleanup would have to stop (or say it stops).
        cuda_visible_devices = self._cuda_visible_devices()
        self.pending_id = secrets.token_hex(8)
        return jupyter.LaunchRequest(
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
            port_wait=max(1, int(request.start_timeout)),
        )

    def _while_pending(self, launch: Callable[[], T]) -> T:
        """Run a launch whose id is pending, and what it answers: until then an interrupt
        stops what it may have started (see _stop_unfinished_launch)."""
        try:
            answer = launch()
        except ProtocolError:
            # The script ran, but what came back is not what it writes: whatever it
            # launched is stopped by its id.
            raise
        except RemoteError:
            self.pending_id = ""  # the script failed and cleaned up after itself
            raise
        self.pending_id = ""
        return answer

    # -- --detach --no-wait: the job is queued, and labhop goes -----------------------------
    def _serve(self) -> None:
        if not self.request.no_wait:
            super()._serve()
            return
        queued = self._queue()
        # Nothing to wait for: the queue holds the job. The cleanup finds no server of
        # this run to stop (and none pending), and `stopped` says it keeps running.
        self.ready = True
        self._announce_queued(queued)

    def _queue(self) -> Queued:
        backend = self.backend = self._launch_backend()
        if not isinstance(backend, SlurmBackend):  # commands.start refuses it before
            raise CommandLineError("--no-wait needs --slurm: only a batch job waits in a queue")
        name = self._name()
        launch = self._launch_request(name, "tcp")
        with self.ui.spinner(f"submitting {self._what()} as '{name}' to Slurm"):
            return self._while_pending(lambda: backend.queue(launch))

    def _announce_queued(self, queued: Queued) -> None:
        name, host, target = self._name(), self._host(), self.request.target
        attach = target.command("attach", after=(name,))
        state = queued.job.describe()
        if queued.existing:
            self.ui.done(f"'{name}' is already Slurm job {queued.jobid} on {host}: {state}; "
                         "nothing new submitted")
        else:
            self.ui.done(f"submitted Slurm job {queued.jobid} for '{name}' on {host}: "
                         f"{state}; labhop does not wait for it to run")
        # An attach before the job runs waits for it (see AttachSession).
        self.ui.info(f"attach with: {attach}")
        self.ui.info(f"cancel it with: {target.command('stop', after=(name,))}")
        self.ui.event("queued", name=name, host=host, jobid=queued.jobid,
                      job_state=queued.job.state, existing=queued.existing, attach=attach)

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
            # The local port it is reached on, for every laptop's attach to try first.
            "port": request.port or self._preferred_port(),
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

    # The local port its launch recorded (`port` in the launch record), if any.
    recorded_port: object = None

    def _obtain_server(self) -> Server:
        # Any backend reads the state directory; the server's own record says which one
        # runs it (only Slurm can say whether a job is alive).
        finder = backend_for_launch(self._conn(), slurm_args=None)
        entry = finder.find(self.request.name, with_token=True)
        self.backend = backend_for_entry(self._conn(), entry, self._backend_options())
        server = server_from_entry(entry)
        if not server.endpoint and isinstance(self.backend, SlurmBackend):
            # A job still queued (labhop HOST --detach --no-wait): it serves once it runs.
            self.ui.info(f"'{entry.name}' on {self._host()} is Slurm job {entry.jobid}, "
                         "which has not started serving yet; waiting for it")
            server = self.backend.wait_until_running(server)
        self.ui.info(f"attaching to '{entry.name}' on {self._host()} "
                     f"({self.backend.where(server)})")
        self.request = dataclasses.replace(
            self.request, app=str(entry.record.get("app") or DEFAULT_APP), name=entry.name)
        self.recorded_port = entry.record.get("port")
        return server

    def _preferred_port(self) -> int:
        # The port its launch recorded: every laptop tries the same one, whatever name
        # it gives the host.
        recorded = self.recorded_port
        if isinstance(recorded, int) and not isinstance(recorded, bool) and (
                0 < recorded < 65536):
            return recorded
        return super()._preferred_port()

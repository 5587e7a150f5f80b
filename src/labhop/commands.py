"""The short commands (`ls`, `stop`, `logs`): connect, run one remote step, return data.

They return plain data; `cli` decides how to print it (a table or `--json`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from labhop import connection, gpus, proc, remote, slurm
from labhop.backends import Backend, HostBackend, backend_for_entry
from labhop.connection import Connection
from labhop.errors import LabhopError, ServerNotFoundError
from labhop.ssh import Target
from labhop.ui import UI


@contextlib.contextmanager
def connected(target: Target, ui: UI | None = None) -> Iterator[Backend]:
    """A backend over the shared connection, for one command (see connection): any one
    reads the state directory that lists every backend's servers."""
    progress = ui.step if ui is not None else (lambda _message: None)
    with connection.connected(target, progress=progress) as conn:
        yield HostBackend(conn)


@dataclass(frozen=True)
class ServerRow:
    """One line of `labhop ls`."""

    name: str
    app: str
    env: str
    root_dir: str
    started: str
    age_s: int | None
    state: str
    pid: str
    kernels: int | None
    owner: str
    node: str
    idle_timeout: int | None
    jobid: str = ""
    job_state: str = ""
    time_left_s: int | None = None

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def row_from_entry(entry: remote.ServerEntry, now: datetime) -> ServerRow:
    record = entry.record
    started = str(record.get("started") or "")
    age = None
    with contextlib.suppress(ValueError):
        age = int((now - datetime.fromisoformat(started)).total_seconds())
    if entry.owner:
        state = "attached"
    elif record.get("keep"):
        state = "kept"
    else:
        state = "owner gone"
    idle = record.get("idle_timeout")
    job = slurm.parse_job_line(entry.job) if entry.jobid else None
    return ServerRow(
        name=entry.name,
        app=str(record.get("app") or ""),
        env=str(record.get("env") or ""),
        root_dir=entry.root or str(record.get("root_dir") or "~"),
        started=started,
        age_s=age,
        state=state,
        pid=entry.pid,
        kernels=entry.kernels,
        owner=entry.owner,
        node=entry.node,
        idle_timeout=idle if isinstance(idle, int) else None,
        jobid=entry.jobid,
        job_state=job.state if job else "",
        time_left_s=job.time_left_s if job else None,
    )


def list_servers(target: Target, *, ui: UI | None = None) -> tuple[list[ServerRow], list[str]]:
    with connected(target, ui) as backend:
        entries, cleaned = backend.list()
    now = datetime.now(timezone.utc)
    return [row_from_entry(entry, now) for entry in entries], cleaned


def fetch_gpus(conn: Connection) -> gpus.GpuReport:
    """What nvidia-smi on the host says now, with each GPU process's user and server."""
    return HostBackend(conn).gpus()


def resolve_gpus(backend: Backend, spec: str, host: str) -> tuple[gpus.GpuChoice,
                                                                   gpus.GpuReport]:
    """`--gpus SPEC` checked against the GPUs the backend sees (NoGpusError names those
    that exist).

    Returns the choice (its CUDA_VISIBLE_DEVICES for the launch) and the report it was
    made from, which `gpu_summary` shows again once the server is ready.
    """
    selection = gpus.parse_gpu_selection(spec)
    if selection.kind == "none":
        return gpus.choose(selection, gpus.GpuReport(), host, spec), gpus.GpuReport()
    report = backend.gpus() or gpus.GpuReport(smi="missing")
    return gpus.choose(selection, report, host, spec), report


@dataclass(frozen=True)
class GpuSummary:
    """The compact table shown after start-up, and its one-line warning."""

    rows: list[list[str]]
    warning: str | None


def gpu_summary(backend: Backend, host: str,
                chosen: tuple[gpus.GpuChoice, gpus.GpuReport] | None) -> GpuSummary | None:
    """The GPUs a started server uses (all of them without --gpus); None to show nothing.

    Without --gpus (`chosen` None) a host without nvidia-smi or GPUs is normal (a CPU
    box), as is a backend whose GPUs are elsewhere (a job's node): nothing is shown, and
    no failure of this query may spoil a ready server.
    """
    if chosen is None:
        try:
            report = backend.gpus()
        except LabhopError:
            return None
        if report is None or gpus.problem(report, host):
            return None
        choice = gpus.GpuChoice("", report.gpus)
    else:
        choice, report = chosen
    if not choice.gpus:
        return None
    return GpuSummary(gpus.gpu_rows(report, choice.gpus),
                      gpus.warning_line(report, choice.gpus))


@dataclass(frozen=True)
class Stopped:
    name: str
    pid: str
    kernels: int | None
    signal: str  # "" when Jupyter's own shutdown (SIGTERM) was enough, else "KILL"


def stop_servers(target: Target, name: str, *, stop_all: bool, ui: UI) -> list[Stopped]:
    with connected(target, ui) as backend:
        if stop_all:
            entries, _ = backend.list()
            if not entries:
                raise ServerNotFoundError(f"no labhop server is running on {target.host}")
        else:
            entries = [backend.find(name)]
        stopped = []
        for entry in entries:
            with ui.spinner(f"stopping '{entry.name}' (pid {entry.pid})"):
                # grace 0: SIGTERM straight away, which is Jupyter's own clean shutdown
                # (kernels shut down, checkpoints written); SIGKILL only if it hangs.
                # Through the backend that runs it, as its state record says (scancel
                # for a Slurm job); SIGTERM straight away otherwise.
                output = backend_for_entry(backend.conn, entry).stop(entry.name)
            signals = output.multi.get("signal", [])
            stopped.append(Stopped(entry.name, entry.pid, entry.kernels,
                                   "KILL" if "KILL" in signals else ""))
        return stopped


def show_logs(target: Target, name: str, *, lines: int, follow: bool, ui: UI) -> str:
    """The log tail as text; with `follow`, stream it to stdout until Ctrl+C (or a
    SIGTERM or hangup: see connection.connected)."""
    with connected(target, ui) as backend:
        entry_name = name or backend.find().name
        text = backend.logs(entry_name, lines=lines)
        if text is None:
            backend.find(entry_name)  # raises, naming the servers that do exist
            raise ServerNotFoundError(f"'{entry_name}' on {target.host} has no log yet")
        if not follow:
            return text
        child = backend.follow_logs(entry_name, lines=lines)
        try:
            while child.poll() is None:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass  # the way to end --follow; the terminal may be gone (SIGHUP)
        finally:
            proc.release(child, timeout=5)
        return ""

"""`labhop ls HOST`: the servers running on HOST, one row each."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from labhop.commands.common import state_backend
from labhop.remote import protocol, squeue
from labhop.ssh.target import Target
from labhop.ui import UI


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
    pid: int | None  # on the host, or the job's node; None when the entry has none yet
    kernels: int | None
    owner: str  # each attached labhop's client, ", "-joined ("" when none is)
    node: str
    idle_timeout: int | None
    jobid: str = ""
    job_state: str = ""
    time_left_s: int | None = None

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def row_from_entry(entry: protocol.ServerEntry, now: datetime) -> ServerRow:
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
    job = squeue.parse_job_line(entry.job) if entry.jobid else None
    return ServerRow(
        name=entry.name,
        app=str(record.get("app") or ""),
        env=str(record.get("env") or ""),
        root_dir=entry.root or str(record.get("root_dir") or "~"),
        started=started,
        age_s=age,
        state=state,
        pid=int(entry.pid) if entry.pid.isdigit() else None,
        kernels=entry.kernels,
        # One client a line on the host (see owner_clients); a line can hold no newline.
        owner=", ".join(line for line in entry.owner.split("\n") if line),
        node=entry.node,
        idle_timeout=idle if isinstance(idle, int) else None,
        jobid=entry.jobid,
        job_state=job.state if job else "",
        time_left_s=job.time_left_s if job else None,
    )


def list_servers(target: Target, *, ui: UI | None = None) -> tuple[list[ServerRow], list[str]]:
    with state_backend(target, ui) as backend:
        entries, cleaned = backend.list()
    now = datetime.now(timezone.utc)
    return [row_from_entry(entry, now) for entry in entries], cleaned

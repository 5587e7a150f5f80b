"""`labhop stop HOST [NAME|--all]`: stop servers through the backend that runs each."""

from __future__ import annotations

from dataclasses import dataclass

from labhop.backends.base import backend_for_entry
from labhop.commands.common import state_backend
from labhop.errors import ServerNotFoundError
from labhop.ssh.target import Target
from labhop.ui import UI


@dataclass(frozen=True)
class Stopped:
    name: str
    pid: str
    kernels: int | None
    signal: str  # "" when Jupyter's own shutdown (SIGTERM) was enough, else "KILL"


def stop_servers(target: Target, name: str, *, stop_all: bool, ui: UI) -> list[Stopped]:
    with state_backend(target, ui) as backend:
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

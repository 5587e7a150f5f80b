"""`labhop gpus HOST`: what nvidia-smi on the host says now."""

from __future__ import annotations

from labhop import gpus
from labhop.backends.host import HostBackend
from labhop.ssh.connection import Connection


def fetch_gpus(conn: Connection) -> gpus.GpuReport:
    """What nvidia-smi on the host says now, with each GPU process's user and server."""
    return HostBackend(conn).gpus()

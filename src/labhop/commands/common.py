"""What every short command starts with: the host's shared connection and a backend on it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from labhop.backends.base import Backend
from labhop.backends.host import HostBackend
from labhop.ssh import connection
from labhop.ssh.target import Target
from labhop.ui import UI


@contextlib.contextmanager
def state_backend(target: Target, ui: UI | None = None) -> Iterator[Backend]:
    """A backend over the shared connection, for one command (see connection): any one
    reads the state directory that lists every backend's servers."""
    progress = ui.step if ui is not None else (lambda _message: None)
    with connection.connected(target, progress=progress) as conn:
        yield HostBackend(conn)

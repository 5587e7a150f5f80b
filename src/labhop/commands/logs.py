"""`labhop logs HOST [NAME]`: a server's log tail, or the log followed until Ctrl+C."""

from __future__ import annotations

import time
from collections.abc import Callable

from labhop.commands.common import state_backend
from labhop.errors import ServerNotFoundError
from labhop.ssh import proc
from labhop.ssh.target import Target
from labhop.ui import UI


def show_logs(target: Target, name: str, *, lines: int, follow: bool, ui: UI,
              sink: Callable[[str], None] | None = None) -> str:
    """The log tail as text; with `follow`, stream it until Ctrl+C (or a SIGTERM or
    hangup: see connection.connected): line by line to `sink`, or without one straight to
    stdout, byte for byte."""
    with state_backend(target, ui) as backend:
        entry_name = name or backend.find().name
        text = backend.logs(entry_name, lines=lines)
        if text is None:
            backend.find(entry_name)  # raises, naming the servers that do exist
            raise ServerNotFoundError(f"'{entry_name}' on {target.host} has no log yet")
        if not follow:
            return text
        child = backend.follow_logs(entry_name, lines=lines, piped=sink is not None)
        try:
            if sink is not None and child.stdout is not None:
                for line in child.stdout:
                    sink(line)
            while child.poll() is None:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass  # the way to end --follow; the terminal may be gone (SIGHUP)
        finally:
            proc.release(child, timeout=5)
        return ""

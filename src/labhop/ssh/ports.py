"""Local ports on 127.0.0.1 and the per-command run directory."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
import zlib
from pathlib import Path

# Default local ports come from this range, one stable port per host name, so bookmarks
# and open tabs keep working from one run to the next.
PORT_BASE = 8800


PORT_SPAN = 1000


def make_run_dir(base: Path | None = None) -> Path:
    """A private (0700) directory, named at random, for one command's ssh logs and the
    browser file: in `base` (labhop's own private directory) when there is one."""
    if base is None:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
            base = Path(runtime)
    return Path(tempfile.mkdtemp(prefix="run-" if base else "labhop-",
                                 dir=str(base) if base else None))


def remove_run_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def preferred_port(host: str, name: str = "") -> int:
    """The local port a server is first tried on: derived from the host as typed and the
    server's name, so that each server of a host keeps its own URL (and a bookmark of it
    keeps working) while two servers of one host do not compete for one port."""
    key = f"{host}\0{name}" if name else host
    return PORT_BASE + zlib.crc32(key.encode()) % PORT_SPAN


def port_is_free(port: int) -> bool:
    """Could ssh listen on 127.0.0.1:port? (ssh sets SO_REUSEADDR too, so TIME_WAIT is fine.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def any_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

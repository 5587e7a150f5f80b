"""Local ports on 127.0.0.1 and the per-command run directory."""

from __future__ import annotations

import enum
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


# Where Linux says the ports a user who is not root may listen on begin (net.ipv4.
# ip_unprivileged_port_start); 1024 elsewhere, and where the file cannot be read.
UNPRIVILEGED_PORT_START_FILE = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
DEFAULT_UNPRIVILEGED_PORT_START = 1024


@enum.unique
class Refusal(enum.Enum):
    """Why ssh could not listen on a local port: each calls for other advice."""

    IN_USE = "in use"  # another program listens there (EADDRINUSE)
    PRIVILEGED = "privileged"  # below the first unprivileged port, and we are not root
    DENIED = "denied"  # not allowed for some other reason (a security policy)


def unprivileged_port_start() -> int:
    """The lowest port a user who is not root may listen on."""
    try:
        return int(UNPRIVILEGED_PORT_START_FILE.read_text().strip())
    except (OSError, ValueError):
        return DEFAULT_UNPRIVILEGED_PORT_START


def classify_bind_error(port: int, err: int, first_unprivileged: int) -> Refusal | None:
    """What a bind's errno says about `port`; None for an errno that is no refusal of the
    port itself (the caller re-raises it)."""
    if err == errno.EADDRINUSE:
        return Refusal.IN_USE
    if err in (errno.EACCES, errno.EPERM):
        # Only a port below the threshold is refused for being privileged; above it a
        # permission error comes from a policy, and "privileged" would send the user astray.
        return Refusal.PRIVILEGED if port < first_unprivileged else Refusal.DENIED
    return None


def port_refusal(port: int) -> Refusal | None:
    """Why ssh could not listen on 127.0.0.1:port now; None when it could.
    (ssh sets SO_REUSEADDR too, so TIME_WAIT is fine.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            refusal = classify_bind_error(port, exc.errno or 0, unprivileged_port_start())
            if refusal is None:
                raise
            return refusal
    return None


def port_is_free(port: int) -> bool:
    """Could ssh listen on 127.0.0.1:port?"""
    return port_refusal(port) is None


def any_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

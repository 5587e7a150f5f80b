"""The laptop side: a private run directory, local ports, and the browser.

Nothing here talks to the remote.
"""

from __future__ import annotations

import contextlib
import errno
import html
import logging
import os
import shutil
import socket
import tempfile
import webbrowser
import zlib
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

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


def preferred_port(host: str) -> int:
    return PORT_BASE + zlib.crc32(host.encode()) % PORT_SPAN


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


def write_redirect_file(run_dir: Path, url: str) -> Path:
    """A 0600 page that sends the browser to `url`, so the token is on no command line."""
    path = run_dir / "open.html"
    quoted = html.escape(url, quote=True)
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<meta http-equiv='refresh' content='0;url={quoted}'>"
        "<title>labhop</title></head>"
        f"<body><p>Opening Jupyter… <a href='{quoted}'>continue</a></p></body></html>\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(page)
    return path


def open_browser(page: Path) -> bool:
    with contextlib.suppress(webbrowser.Error):
        return webbrowser.open(page.as_uri(), new=2)
    return False

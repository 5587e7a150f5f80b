"""Opening the local browser on a 0600 redirect page, so the token is on no command line."""

from __future__ import annotations

import contextlib
import html
import os
import webbrowser
from pathlib import Path


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

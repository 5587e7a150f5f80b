"""The PATH that `labhop HOST PATH` opens in the browser: what the user typed, normalized
before it goes to the remote (which checks it, see sh/open_path.sh), and the URL path
that opens it in each Jupyter app. Pure functions: text in, text out.

"""

from __future__ import annotations

import posixpath
from urllib.parse import quote

from labhop.errors import CommandLineError
from labhop.model import APP_TABLE


def normalize(text: str) -> str:
    """PATH as typed -> the form the remote reads: `.` and `x/..` folded away (`..` is
    left only at the start, of the path or after `~/`, where only the remote can tell
    where it leads), no trailing or doubled slashes; a leading `~` is kept for the remote
    to expand. CommandLineError for an empty PATH."""
    if not text:
        raise CommandLineError(
            "bad PATH '': name a notebook or folder on the remote, relative to --dir")
    if text == "~" or text.startswith("~/"):
        rest = posixpath.normpath(text[2:]) if text[2:].strip("/") else "."
        return "~" if rest == "." else f"~/{rest.lstrip('/')}"
    path = posixpath.normpath(text)
    # POSIX lets `//` at the start mean something else; no Unix host labhop serves does.
    return "/" + path.lstrip("/") if path.startswith("/") else path


def url_path(app: str, path: str, kind: str) -> str:
    """The path of the URL that opens `path` (relative to the server root, as the remote
    reported it; "." is the root itself) of `kind` "file" or "dir" in `app`.

    JupyterLab opens files and folders alike under /lab/tree/; Notebook has a page per
    kind (/tree/ for a folder, /notebooks/ for a notebook, /edit/ for any other file);
    a bare Jupyter Server has no pages, so it gets its root. Each segment is quoted, so
    spaces, `#`, `?`, `%` and non-ASCII names reach Jupyter as they are.
    """
    if app == "server" or not path or path == "." or kind not in ("file", "dir"):
        return APP_TABLE[app].path
    quoted = "/".join(quote(part, safe="") for part in path.split("/"))
    if app == "lab":
        return f"/lab/tree/{quoted}"
    if kind == "dir":
        return f"/tree/{quoted}"
    return f"/notebooks/{quoted}" if path.endswith(".ipynb") else f"/edit/{quoted}"

"""What the user sees: progress steps, warnings, the ready banner, tables.

Progress and messages go to stderr; results (the URL, tables, JSON) go to stdout, so
`labhop ... | tool` gets only data. On a terminal a spinner shows the current step;
elsewhere each step is one plain line. `JsonUI` (`--json` on start and attach) says the
same things as JSON lines on stdout, for an editor or a script, and the text on stderr.

rich is imported the first time something is drawn, so a command that prints nothing
(or only raw data) does not pay for it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.status import Status


# show(title, headers, rows): one refresh of a table that `UI.refreshing` keeps on screen.
ShowTable = Callable[[str, list[str], list[list[str]]], None]


class UI:
    def __init__(self, *, stdout: TextIO | None = None, stderr: TextIO | None = None,
                 quiet: bool = False) -> None:
        self._stdout = stdout or sys.stdout
        self._stderr = stderr or sys.stderr
        self.quiet = quiet
        self._status: Status | None = None

    @functools.cached_property
    def out(self) -> Console:
        return _console(self._stdout)

    @functools.cached_property
    def err(self) -> Console:
        return _console(self._stderr)

    @property
    def interactive(self) -> bool:
        return _is_terminal(self._stderr)

    @property
    def on_terminal(self) -> bool:
        """Whether results (stdout) reach a terminal."""
        return _is_terminal(self._stdout)

    def event(self, kind: str, **fields: object) -> None:
        """A fact a program may act on (ready, reconnected, stopped); said only by JsonUI,
        the text that people read says it already."""

    def end(self, status: int) -> None:
        """The command is over with `status` (just before the process exits)."""

    # -- plain lines: written directly (rich is for the spinner and the redrawn tables) --
    def _line(self, stream: TextIO, text: str, mark: str = "", style: str = "") -> None:
        """One line (or several) for people, with an optional coloured mark before it.
        On a terminal, control characters in `text` are shown escaped: what the remote
        printed (a folder name, a log line) must never drive the terminal."""
        terminal = _is_terminal(stream)
        body = printable(text) if terminal else text
        if self._status is not None and stream is self._stderr:
            # Beside a running spinner: through its console, which keeps it in place.
            self.err.print(f"{mark} {body}" if mark else body, markup=False,
                           highlight=False)
            return
        if mark:
            body = f"{_styled(mark, style, terminal)} {body}"
        stream.write(body + "\n")
        stream.flush()

    def step(self, message: str) -> None:
        """A step that is starting; replaces the spinner text on a terminal."""
        if self._status is not None:
            self._status.update(f"{escape(printable(message))}…")
        elif not self.quiet:
            self._line(self._stderr, f"{message}…", "•", _DIM)

    def done(self, message: str) -> None:
        if not self.quiet:
            self._line(self._stderr, message, "✓", _GREEN)

    def info(self, message: str) -> None:
        if not self.quiet:
            self._line(self._stderr, message)

    def warn(self, message: str) -> None:
        self._line(self._stderr, message, "!", _YELLOW)

    def error(self, message: str, details: str = "") -> None:
        self._line(self._stderr, message, "labhop: error:", _BOLD_RED)
        if details:
            for line in details.rstrip().splitlines():
                self._line(self._stderr, line, "  |", _DIM)

    def check(self, ok: bool | None, label: str, detail: str, fix: str = "", *,
              width: int = 0) -> None:
        """One line of `labhop doctor` on stdout: ✓ passed, ✗ failed (and on the next line
        what to do), an en dash: not checked."""
        mark, style = (("✓", _GREEN) if ok else ("\u2013", _DIM) if ok is None
                       else ("✗", _BOLD_RED))
        self._line(self._stdout, f"{label.ljust(width)}  {detail}", mark, style)
        if ok is False and fix:
            self._line(self._stdout, f"{' ' * width}  fix: {fix}", " ")

    def result(self, text: str) -> None:
        self._line(self._stdout, text)

    def raw(self, text: str) -> None:
        """Data that must reach stdout byte for byte (JSON, log lines)."""
        self._stdout.write(text if text.endswith("\n") or not text else text + "\n")
        self._stdout.flush()

    def table(self, headers: list[str], rows: list[list[str]], *,
              to_stderr: bool = False) -> None:
        """A table of results on stdout; `to_stderr` for one that only informs (progress)."""
        if to_stderr and self.quiet:
            return
        stream = self._stderr if to_stderr else self._stdout
        terminal = _is_terminal(stream)
        header, *lines = format_table(headers, rows, terminal=terminal)
        stream.write("\n".join([_styled(header, _BOLD, terminal), *lines]) + "\n")
        stream.flush()

    @contextlib.contextmanager
    def refreshing(self) -> Iterator[ShowTable]:
        """Show a titled table again and again: redrawn in place on a terminal, one after
        another (for logs and pipes) elsewhere."""
        if not _is_terminal(self._stdout):
            def show_next(title: str, headers: list[str], rows: list[list[str]]) -> None:
                self.result(title)
                self.table(headers, rows)
                self.raw("\n")

            yield show_next
            return
        from rich.console import Group
        from rich.live import Live
        from rich.text import Text

        with Live(console=self.out, auto_refresh=False) as live:
            def show_again(title: str, headers: list[str], rows: list[list[str]]) -> None:
                text = "\n".join(format_table(headers, rows, terminal=True))
                live.update(Group(Text(printable(title), style="dim"), Text(text)),
                            refresh=True)

            yield show_again

    @contextlib.contextmanager
    def spinner(self, message: str) -> Iterator[None]:
        """Show a spinner on a terminal while a step runs (nothing to clean up otherwise)."""
        if not self.interactive or self.quiet:
            self.step(message)
            yield
            return
        with self.err.status(f"{escape(printable(message))}…") as status:
            self._status = status
            try:
                yield
            finally:
                self._status = None


class JsonUI(UI):
    """`--json`: stdout carries JSON lines only, one event per line, flushed as it
    happens; everything for people (steps, the URL, tables) goes to stderr as plain lines.

    Events: `progress` (a step starts), `info`, `warning` (each with `message`), `ready`,
    `reconnecting`, `reconnected`, and last either `stopped` or `error` (with `message`
    and `code`, the exit status). Readers should skip events they do not know.
    """

    def __init__(self, *, stdout: TextIO | None = None, stderr: TextIO | None = None,
                 quiet: bool = False) -> None:
        # Results that would go to stdout (the URL) are text for people here too.
        super().__init__(stdout=stderr or sys.stderr, stderr=stderr, quiet=quiet)
        self._events = stdout or sys.stdout
        self._ended = False
        self._error: tuple[str, str] | None = None

    @property
    def interactive(self) -> bool:
        return False  # plain lines on stderr: no spinner to redraw beside the events

    def event(self, kind: str, **fields: object) -> None:
        if self._ended:
            return
        self._ended = kind in ("stopped", "error")
        line = json.dumps({"event": kind, **fields}) + "\n"
        try:
            self._events.write(line)
            self._events.flush()
        except (BrokenPipeError, ValueError):
            # The reader went away (it took the URL and closed the pipe): the session
            # goes on; later events go nowhere, and the exit does not fail on a flush.
            self._ended = True
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._events.fileno())
                os.close(devnull)

    def step(self, message: str) -> None:
        super().step(message)
        self.event("progress", message=message)

    def done(self, message: str) -> None:
        super().done(message)
        self.event("info", message=message)

    def info(self, message: str) -> None:
        super().info(message)
        self.event("info", message=message)

    def warn(self, message: str) -> None:
        super().warn(message)
        self.event("warning", message=message)

    def error(self, message: str, details: str = "") -> None:
        super().error(message, details)
        self._error = (message, details)  # the event waits for the exit status (end)

    def end(self, status: int) -> None:
        if self._ended or status == 0:
            return  # a session that ends well said `stopped` itself, with its details
        message, details = self._error or (
            ("interrupted before the server was ready", "") if status == 130
            else (f"exit status {status}", ""))
        self.event("error", message=message, code=status,
                   **({"details": details} if details else {}))


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _console(stream: TextIO) -> Console:
    from rich.console import Console

    console = Console(file=stream, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        # Piped output is for scripts and files: never fold a table row (nor a table that
        # only informs, such as the GPUs at start).
        console.width = 1000
    return console


def escape(text: str) -> str:
    """`text` as rich prints it literally (its `[...]` are not markup)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


_DIM, _GREEN, _YELLOW, _BOLD, _BOLD_RED = "2", "32", "33", "1", "1;31"
# C0 controls but newline and tab, DEL, and C1 controls: shown, never sent to a terminal.
_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x00, 0x09), *range(0x0B, 0x20),
                                                   *range(0x7F, 0xA0))}


def printable(text: str) -> str:
    """`text` with every control character that could drive a terminal (escape sequences,
    OSC 52 clipboard writes, title changes, a carriage return that hides what came
    before) written as `\\xNN`; newline and tab stay."""
    return text.translate(_CONTROL)


def _styled(text: str, style: str, terminal: bool) -> str:
    if not terminal or not style or os.environ.get("NO_COLOR"):
        return text
    return f"\x1b[{style}m{text}\x1b[0m"


def _width(text: str) -> int:
    """How many columns `text` takes on a terminal (East Asian wide characters take two)."""
    if text.isascii():
        return len(text)
    import unicodedata  # only for text that is not ASCII

    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def format_table(headers: list[str], rows: list[list[str]], *,
                 terminal: bool = False) -> list[str]:
    """The lines of a table: left-aligned columns two spaces apart, the headers first.
    On a terminal each cell is made printable first (see `printable`)."""
    clean = [[printable(cell) if terminal else cell for cell in row] for row in rows]
    widths = [max([_width(header), *(_width(row[index]) for row in clean if index < len(row))])
              for index, header in enumerate(headers)]
    lines = []
    for row in [headers, *clean]:
        cells = [cell + " " * (widths[index] - _width(cell)) for index, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return lines

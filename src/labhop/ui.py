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
    from rich.table import Table


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

    def event(self, kind: str, **fields: object) -> None:
        """A fact a program may act on (ready, reconnected, stopped); said only by JsonUI,
        the text that people read says it already."""

    def end(self, status: int) -> None:
        """The command is over with `status` (just before the process exits)."""

    def step(self, message: str) -> None:
        """A step that is starting; replaces the spinner text on a terminal."""
        if self._status is not None:
            self._status.update(f"{escape(message)}…")
        elif not self.quiet:
            self.err.print(f"[dim]•[/dim] {escape(message)}…")

    def done(self, message: str) -> None:
        if not self.quiet:
            self.err.print(f"[green]✓[/green] {escape(message)}")

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(escape(message))

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]![/yellow] {escape(message)}")

    def error(self, message: str, details: str = "") -> None:
        self.err.print(f"[bold red]labhop: error:[/bold red] {escape(message)}")
        if details:
            for line in details.rstrip().splitlines():
                self.err.print(f"  [dim]|[/dim] {escape(line)}")

    def check(self, ok: bool | None, label: str, detail: str, fix: str = "", *,
              width: int = 0) -> None:
        """One line of `labhop doctor` on stdout: ✓ passed, ✗ failed (and on the next line
        what to do), an en dash: not checked."""
        mark = ("[green]✓[/green]" if ok else "[dim]\u2013[/dim]" if ok is None
                else "[bold red]✗[/bold red]")
        self.out.print(f"{mark} {escape(label.ljust(width))}  {escape(detail)}")
        if ok is False and fix:
            self.out.print(f"  {' ' * width}  [bold]fix:[/bold] {escape(fix)}")

    def result(self, text: str) -> None:
        self.out.print(escape(text))

    def raw(self, text: str) -> None:
        """Data that must reach stdout byte for byte (JSON, log lines)."""
        self._stdout.write(text if text.endswith("\n") or not text else text + "\n")
        self._stdout.flush()

    def table(self, headers: list[str], rows: list[list[str]], *,
              to_stderr: bool = False) -> None:
        """A table of results on stdout; `to_stderr` for one that only informs (progress)."""
        if to_stderr and self.quiet:
            return
        (self.err if to_stderr else self.out).print(_table(headers, rows))

    @contextlib.contextmanager
    def refreshing(self) -> Iterator[ShowTable]:
        """Show a titled table again and again: redrawn in place on a terminal, one after
        another (for logs and pipes) elsewhere."""
        if not _is_terminal(self._stdout):
            def show_next(title: str, headers: list[str], rows: list[list[str]]) -> None:
                self.out.print(escape(title))
                self.out.print(_table(headers, rows))
                self.out.print()

            yield show_next
            return
        from rich.console import Group
        from rich.live import Live
        from rich.text import Text

        with Live(console=self.out, auto_refresh=False) as live:
            def show_again(title: str, headers: list[str], rows: list[list[str]]) -> None:
                live.update(Group(Text(title, style="dim"), _table(headers, rows)),
                            refresh=True)

            yield show_again

    @contextlib.contextmanager
    def spinner(self, message: str) -> Iterator[None]:
        """Show a spinner on a terminal while a step runs (nothing to clean up otherwise)."""
        if not self.interactive or self.quiet:
            self.step(message)
            yield
            return
        with self.err.status(f"{escape(message)}…") as status:
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


def _table(headers: list[str], rows: list[list[str]]) -> Table:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table

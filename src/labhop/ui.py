"""What the user sees: progress steps, warnings, the ready banner, tables.

Progress and messages go to stderr; results (the URL, tables, JSON) go to stdout, so
`labhop ... | tool` gets only data. On a terminal a spinner shows the current step;
elsewhere each step is one plain line.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table


class UI:
    def __init__(self, *, stdout: TextIO | None = None, stderr: TextIO | None = None,
                 quiet: bool = False) -> None:
        self.out = Console(file=stdout or sys.stdout, highlight=False, soft_wrap=True)
        if not self.out.is_terminal:
            # Piped output is for scripts and files: never fold a table row.
            self.out.width = 1000
        self.err = Console(file=stderr or sys.stderr, highlight=False, soft_wrap=True)
        self.quiet = quiet
        self._status = None

    @property
    def interactive(self) -> bool:
        return self.err.is_terminal

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

    def result(self, text: str) -> None:
        self.out.print(escape(text))

    def raw(self, text: str) -> None:
        """Data that must reach stdout byte for byte (JSON, log lines)."""
        self.out.file.write(text if text.endswith("\n") or not text else text + "\n")
        self.out.file.flush()

    def table(self, headers: list[str], rows: list[list[str]]) -> None:
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for header in headers:
            table.add_column(header, overflow="fold")
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        self.out.print(table)

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

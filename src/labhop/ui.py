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


class UI:
    def __init__(self, *, stdout: TextIO | None = None, stderr: TextIO | None = None,
                 quiet: bool = False) -> None:
        self.out = Console(file=stdout or sys.stdout, highlight=False, soft_wrap=True)
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

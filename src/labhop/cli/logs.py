"""`labhop logs HOST [NAME] [-f] [-n N]`."""

from __future__ import annotations

from typing import Any

import click

from labhop.cli import shared
from labhop.cli.completion import complete_host
from labhop.cli.shared import ssh_options
from labhop.commands.logs import show_logs
from labhop.errors import ExitStatus
from labhop.ui import UI, printable


@click.command()
@click.argument("host", shell_complete=complete_host)
@click.argument("name", required=False, default="")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl+C.")
@click.option("-n", "--lines", type=click.IntRange(1, 100000), default=100, show_default=True,
              help="How many of the last lines to show.")
@click.option("--raw", is_flag=True,
              help="The log's bytes as they are, control characters included (on a "
                   "terminal they are otherwise shown escaped, as \\x1b).")
@ssh_options
def logs(host: str, name: str, follow: bool, lines: int, raw: bool, **params: Any) -> int:
    """Show the Jupyter log of a server on HOST (NAME may be left out if only one runs).

    On a terminal, control characters in the log (escape sequences, a notebook's output
    that sets the title or the clipboard) are shown escaped; --raw prints them as they are.
    """
    ui = UI()
    escape = ui.on_terminal and not raw

    def show(text: str) -> None:
        ui.raw(printable(text) if escape else text)

    text = show_logs(shared.make_target(host, params), name, lines=lines, follow=follow,
                     ui=ui, sink=show if escape else None)
    if text:
        show(text)
    return ExitStatus.OK

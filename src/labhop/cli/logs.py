"""`labhop logs HOST [NAME] [-f] [-n N]`."""

from __future__ import annotations

from typing import Any

import click

from labhop.cli import shared
from labhop.cli.completion import complete_host
from labhop.cli.shared import ssh_options
from labhop.commands.logs import show_logs
from labhop.errors import ExitStatus
from labhop.ui import UI


@click.command()
@click.argument("host", shell_complete=complete_host)
@click.argument("name", required=False, default="")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl+C.")
@click.option("-n", "--lines", type=click.IntRange(1, 100000), default=100, show_default=True,
              help="How many of the last lines to show.")
@ssh_options
def logs(host: str, name: str, follow: bool, lines: int, **params: Any) -> int:
    """Show the Jupyter log of a server on HOST (NAME may be left out if only one runs)."""
    ui = UI()
    text = show_logs(shared.make_target(host, params), name, lines=lines, follow=follow,
                              ui=ui)
    if text:
        ui.raw(text)
    return ExitStatus.OK

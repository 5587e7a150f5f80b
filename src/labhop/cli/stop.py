"""`labhop stop HOST [NAME|--all]`."""

from __future__ import annotations

from typing import Any

import click

from labhop.cli import shared
from labhop.cli.completion import complete_host
from labhop.cli.shared import ssh_options
from labhop.commands.stop import stop_servers
from labhop.errors import ExitStatus
from labhop.ui import UI


@click.command()
@click.argument("host", shell_complete=complete_host)
@click.argument("name", required=False, default="")
@click.option("--all", "stop_all", is_flag=True, help="Stop every labhop server on HOST.")
@ssh_options
def stop(host: str, name: str, stop_all: bool, **params: Any) -> int:
    """Stop a server on HOST: Jupyter shuts its kernels down first, then it exits.

    NAME may be left out when only one server runs there.
    """
    if name and stop_all:
        raise click.UsageError("give a NAME or --all, not both",
                               ctx=click.get_current_context())
    ui = UI()
    stopped = stop_servers(shared.make_target(host, params), name, stop_all=stop_all, ui=ui)
    for item in stopped:
        kernels = "" if item.kernels is None else (
            f", {item.kernels} kernel{'s' if item.kernels != 1 else ''}")
        forced = "; it had to be killed (SIGKILL)" if item.signal == "KILL" else ""
        ui.done(f"stopped '{item.name}' on {host} (pid {item.pid}{kernels}){forced}")
    return ExitStatus.OK

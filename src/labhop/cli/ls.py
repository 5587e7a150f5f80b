"""`labhop ls HOST`: the table (or JSON) of what `commands.ls` found."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from labhop.cli import shared
from labhop.cli.completion import complete_host
from labhop.cli.shared import ssh_options
from labhop.commands.ls import list_servers
from labhop.errors import ExitStatus
from labhop.ui import UI


def _local_time(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso or "?"


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 3600:
        return f"{max(seconds, 0) // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


@click.command(name="ls")
@click.argument("host", shell_complete=complete_host)
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@ssh_options
def list_command(host: str, as_json: bool, **params: Any) -> int:
    """List the labhop servers running on HOST.

    STATE is 'attached' while a labhop is connected to the server (--json's owner names
    each one, as user@laptop pid N), 'kept' for a server started with --keep, and 'owner
    gone' when the labhop that started it vanished (it stops itself after its
    --idle-timeout). Entries of servers that died are
    cleaned up, never shown as running.
    """
    ui = UI()
    rows, cleaned = list_servers(shared.make_target(host, params), ui=ui)
    if as_json:
        ui.raw(json.dumps([row.as_json() for row in rows], indent=2))
        return ExitStatus.OK
    if cleaned:
        ui.info(f"cleaned up {len(cleaned)} entr{'y' if len(cleaned) == 1 else 'ies'} of "
                f"servers that had exited: {', '.join(cleaned)}")
    if not rows:
        ui.info(f"no labhop servers are running on {host}")
        return ExitStatus.OK
    headers = ["NAME", "APP", "ENV", "ROOT", "STARTED", "AGE", "STATE", "PID", "KERNELS"]
    cells = [[row.name, row.app, row.env or "-", row.root_dir, _local_time(row.started),
              _age(row.age_s), row.state, "-" if row.pid is None else str(row.pid),
              "-" if row.kernels is None else str(row.kernels)] for row in rows]
    if any(row.jobid for row in rows):
        headers += ["JOB", "NODE", "TIME LEFT"]
        for row, line in zip(rows, cells, strict=True):
            left = "-" if row.time_left_s is None else _age(row.time_left_s)
            line += [f"{row.jobid} {row.job_state}" if row.jobid else "-", row.node, left]
    ui.table(headers, cells)
    return ExitStatus.OK

"""`labhop gpus HOST [--watch] [--json]`."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import datetime
from typing import Any

import click

from labhop import gpus
from labhop.cli import shared
from labhop.cli.completion import complete_host
from labhop.cli.shared import ssh_options
from labhop.commands.common import state_backend
from labhop.commands.show_gpus import fetch_gpus
from labhop.errors import ExitStatus
from labhop.ssh.connection import Connection
from labhop.ui import UI

WATCH_INTERVAL_S = 2.0


@click.command(name="gpus")
@click.argument("host", shell_complete=complete_host)
@click.option("--json", "as_json", is_flag=True,
              help="JSON: an array with one object per GPU and its processes (with --watch, "
                   "one array per line).")
@click.option("-w", "--watch", is_flag=True,
              help=f"Refresh every {WATCH_INTERVAL_S:g} s until Ctrl+C.")
@ssh_options
def gpus_command(host: str, as_json: bool, watch: bool, **params: Any) -> int:
    """Show HOST's GPUs: memory, utilisation, temperature, and the processes on them.

    Each process shows its user and PID, and the labhop server whose kernel it is.
    A host without nvidia-smi or without GPUs exits with status 28 (with --json, after an
    empty array).
    """
    ui = UI()
    with state_backend(shared.make_target(host, params), ui) as backend:
        report = fetch_gpus(backend.conn)
        if as_json and gpus.problem(report, host):
            ui.raw("[]")  # a script reads "no GPUs" as JSON too; the reason is on stderr
        gpus.require_gpus(report, host)
        if not watch:
            _show_gpus(ui, report, as_json=as_json)
            return ExitStatus.OK
        # Ctrl+C is the way to end --watch, so it is no failure.
        with contextlib.suppress(KeyboardInterrupt):
            _watch_gpus(ui, backend.conn, host, report, as_json=as_json)
    return ExitStatus.OK


def _show_gpus(ui: UI, report: gpus.GpuReport, *, as_json: bool) -> None:
    if as_json:
        ui.raw(json.dumps(report.as_json(), indent=2))
    else:
        ui.table(gpus.GPU_HEADERS, gpus.gpu_rows(report))


def _watch_gpus(ui: UI, conn: Connection, host: str, report: gpus.GpuReport, *,
                as_json: bool) -> None:
    """Show the report, then a fresh one every WATCH_INTERVAL_S, until Ctrl+C."""
    with contextlib.ExitStack() as stack:
        show = None if as_json else stack.enter_context(ui.refreshing())
        while True:
            if show is None:
                ui.raw(json.dumps(report.as_json()))  # JSON Lines: one array per refresh
            else:
                now = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
                show(f"{host}  {now}  (every {WATCH_INTERVAL_S:g} s; Ctrl+C to stop)",
                     gpus.GPU_HEADERS, gpus.gpu_rows(report))
            time.sleep(WATCH_INTERVAL_S)
            report = fetch_gpus(conn)
            gpus.require_gpus(report, host)

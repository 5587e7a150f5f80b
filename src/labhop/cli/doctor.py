"""`labhop doctor HOST`: each check's line as it comes, then the summary (or one JSON object)."""

from __future__ import annotations

import json
from typing import Any

import click

from labhop.cli import shared
from labhop.cli.completion import complete_env, complete_host
from labhop.cli.shared import resolve_options, ssh_options
from labhop.commands import doctor as doctor_command
from labhop.commands import doctor_checks
from labhop.config import options
from labhop.model import APPS, DEFAULT_APP
from labhop.ui import UI

DOCTOR_HELP = """\b
Checks, in this order (a check that needs one that failed shows \u2013):
  ssh client       `ssh -V`
  ssh config       user, address, port, jump host (`ssh -G`); which master is reused
  login            logging in, and how long it took
  login shell      the shell labhop's scripts run under, and its PATH
  environment      --env activates as a start activates it (else: the login PATH)
  Jupyter          jupyter-APP in it; jupyter_server, jupyterlab, notebook versions
  Unix socket      jupyter_server >= 1.9, and sshd forwards to a test socket
  setsid           on the remote, to detach the server
  state directory  ~/.local/state/labhop/servers is writable
  GPUs             nvidia-smi and its GPUs (not checked with --slurm)
  Slurm            with --slurm: sbatch, squeue, scancel, the partition (-p)

\b
Exit status: 0 when every check passes, else the status of the first failure:
   3  bad ssh configuration   9  no ssh client
  10  unknown host           11  cannot connect
  12  authentication refused 13  host key unknown or changed
  20  environment not found  21  jupyter not found
  26  other remote failure (socket, setsid, state directory)
  28  no GPU (with --gpus)    30  Slurm command or partition missing
"""


@click.command(epilog=DOCTOR_HELP)
@click.argument("host", shell_complete=complete_host)
@click.option("--env", "env_spec", metavar="SPEC", shell_complete=complete_env,
              help="The environment to check, as for start (conda:NAME, venv:PATH, ...). "
                   "Default: the host's `env` in config.toml, else the login PATH.")
@click.option("--app", type=click.Choice(APPS), default=DEFAULT_APP, show_default=True,
              help="Which Jupyter to look for.")
@click.option("--gpus", "gpu_spec", metavar="SPEC",
              help="GPUs the server will need (as for start: 0,2, auto, all); without it "
                   "(nor the host's `gpus` in config.toml) a host without GPUs is a note.")
@click.option("--slurm", "slurm_opts", metavar="'SBATCH OPTIONS'",
              help="Check HOST as a Slurm login node for these sbatch options "
                   "(the partition in -p/--partition).")
@click.option("--json", "as_json", is_flag=True,
              help='One JSON object: {"host", "ok", "exit", "checks": [{"name", "ok", '
                   '"detail", "fix"}, ...]}; "ok" is null for a check not made.')
@ssh_options
def doctor(host: str, as_json: bool, **params: Any) -> int:
    """When something does not work: check, one line each, what labhop needs on HOST.

    Each failed check says what to do. It starts nothing that stays: no server, no
    state entry, and a connection it opened is closed when it ends (unless --persist).
    """
    keys = ("env", "app", "slurm", "gpus", *options.CONNECTION_KEYS)
    resolved = resolve_options(host, keys, from_file=keys)
    request = doctor_command.DoctorRequest(target=shared.make_target(host, params, resolved),
                                          env=resolved.env, app=resolved.app,
                                          slurm=resolved.slurm, gpus=resolved.gpus)
    ui = UI()
    width = max(len(label) for label in doctor_checks.LABELS.values())

    def show(check: doctor_checks.Check) -> None:
        if not as_json:
            ui.check(check.ok, check.label, check.detail, check.fix, width=width)

    report = doctor_command.diagnose(request, show)
    if as_json:
        ui.raw(json.dumps(report.as_json(), indent=2))
    elif report.ok:
        ui.result("all checks passed")
    else:
        failures = [check for check in report.checks if check.ok is False]
        ui.result(f"{len(failures)} check{'s' if len(failures) != 1 else ''} failed; "
                  f"exit status {int(report.exit_status)} ({failures[0].label})")
    return report.exit_status

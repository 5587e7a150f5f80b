"""`labhop [start] HOST [PATH]` and `labhop attach HOST [NAME]`: parse, then hand over to
`commands.start`, which runs the session."""

from __future__ import annotations

from typing import Any

import click

from labhop.cli import shared
from labhop.cli.app import EXIT_CODES_HELP
from labhop.cli.completion import complete_env, complete_host
from labhop.cli.shared import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_QUEUE_TIMEOUT,
    DEFAULT_START_TIMEOUT,
    DEFAULT_WALLTIME_WARNINGS,
    JSON_HELP,
    forward_option,
    resolve_options,
    session_ui,
    ssh_options,
)
from labhop.config import options
from labhop.model import APPS, DEFAULT_APP


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("host", shell_complete=complete_host)
@click.argument("path", required=False, default=None)
@click.option("--env", "env_spec", metavar="SPEC", shell_complete=complete_env,
              help="Environment to start Jupyter in: conda:NAME, mamba:NAME, "
                   "micromamba:NAME, venv:PATH, module:NAME[,NAME], or cmd:'SHELL TEXT'. "
                   "Default: the login shell's PATH.")
@click.option("--app", type=click.Choice(APPS), default=DEFAULT_APP, show_default=True,
              help="Which Jupyter to run.")
@click.option("--gpus", "gpu_spec", metavar="SPEC", default="",
              help="The GPUs the kernels see (CUDA_VISIBLE_DEVICES, numbered as in "
                   "`labhop gpus HOST`): an index like 1, a list like 0,2, GPU UUIDs, auto "
                   "(the GPU with the most free memory), all, or none.")
@click.option("--dir", "root_dir", metavar="PATH", default="",
              help="Server root directory on the remote (default: the remote home). "
                   "~ means the remote home.")
@click.option("--name", metavar="NAME", default="",
              help="Server name (default: the --dir folder's name, or 'home'). "
                   "A server already running under this name is attached to instead.")
@click.option("--port", type=click.IntRange(1, 65535), metavar="N",
              help="Local port for the browser (default: a stable port per host and server, "
                   "or a free one if that is taken).")
@forward_option
@click.option("--no-browser", is_flag=True, help="Print the URL but do not open a browser.")
@click.option("--keep", is_flag=True,
              help="Leave the server running when labhop exits (Ctrl+C closes only the "
                   "tunnel); find it again with `labhop attach HOST NAME`.")
@click.option("--idle-timeout", metavar="DURATION", default=DEFAULT_IDLE_TIMEOUT,
              show_default=True,
              help="The server stops itself after this long with no open browser tab and no "
                   "busy kernel (kernels idle that long are shut down); 0 disables.")
@click.option("--timeout", "start_timeout", metavar="DURATION", default=DEFAULT_START_TIMEOUT,
              show_default=True, help="How long to wait for Jupyter to answer.")
@click.option("--slurm", "slurm_opts", metavar="'SBATCH OPTIONS'",
              help="Run Jupyter as a Slurm batch job; HOST is the login node and the "
                   "quoted options go to sbatch, e.g. --slurm '--gres=gpu:1 -t 4:00:00 -p gpu'.")
@click.option("--queue-timeout", metavar="DURATION", default=DEFAULT_QUEUE_TIMEOUT,
              show_default=True,
              help="With --slurm: cancel the job if it is still pending after this long.")
@click.option("--walltime-warnings", metavar="DURATIONS", default=DEFAULT_WALLTIME_WARNINGS,
              show_default=True,
              help="With --slurm: warn this long before the job's walltime ends, each once "
                   "(comma-separated; \"\" for none).")
@click.option("-d", "--detach", is_flag=True,
              help="Start the server (or find it), wait until it answers, print how to "
                   "attach, and exit 0: it keeps running, with no tunnel and no labhop left "
                   "here (for scripts, Makefiles, editor tasks).")
@click.option("--no-wait", is_flag=True,
              help="With --detach and --slurm: return as soon as the job is queued, with its "
                   "job id and the command to attach (which waits until the job runs).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the URL and errors.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@ssh_options
@click.pass_context
def start(ctx: click.Context, /, host: str, path: str | None, quiet: bool, as_json: bool,
          detach: bool, no_wait: bool, **params: Any) -> int:
    """Start Jupyter on HOST, tunnel it here, and open the browser (the default command).

    \b
      labhop gamer notebooks/train.ipynb   the browser opens that notebook
      labhop gamer --dir ~/proj data       ... or the folder ~/proj/data

    PATH is a notebook, file or folder on HOST, relative to --dir (or absolute, inside
    it); it must exist, or nothing is started (exit status 22). JupyterLab opens it
    under /lab/tree/, Notebook under /notebooks/, /edit/ or /tree/; --app server has
    no pages, so its URL stays the root. Only the first URL opens PATH; after a
    reconnect the URL is the app's start page.

    Ctrl+C stops the server and its kernels and leaves nothing running on HOST
    (with --keep it only closes the tunnel). Arguments after `--` go to Jupyter.
    Defaults per host come from ~/.config/labhop/config.toml ([hosts.HOST] and
    [defaults] tables with these options' names; see the README).
    """
    ui = session_ui(quiet=quiet, as_json=as_json)
    resolved = resolve_options(host)  # what was typed, else the config file's; checked
    from labhop.commands import start as start_command

    return start_command.start(
        resolved, shared.make_target(host, params, resolved), ui, path=path, as_json=as_json,
        jupyter_args=tuple(ctx.obj.get("jupyter_args", ())), detach=detach, no_wait=no_wait)


@click.command()
@click.argument("host", shell_complete=complete_host)
@click.argument("name", required=False, default="")
@click.option("--port", type=click.IntRange(1, 65535), metavar="N",
              help="Local port (default: the one the server's state records, or a free one).")
@forward_option
@click.option("--no-browser", is_flag=True, help="Print the URL but do not open a browser.")
@click.option("--timeout", "start_timeout", metavar="DURATION", default=DEFAULT_START_TIMEOUT,
              show_default=True, help="How long to wait for the server to answer.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the URL and errors.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@ssh_options
def attach(host: str, quiet: bool, as_json: bool, **params: Any) -> int:
    """Tunnel to a server that is already running on HOST and open the browser.

    NAME may be left out when only one server runs there. Works from any laptop:
    everything needed is on HOST. Ctrl+C closes the tunnel; the server keeps running.
    """
    ui = session_ui(quiet=quiet, as_json=as_json)
    from labhop.commands import start as start_command

    # NAME, --port, --forward, --no-browser, --timeout as typed; the config file supplies
    # --port, --forward, --no-browser and how to connect (a config `name` or `timeout` is
    # start's).
    resolved = resolve_options(
        host, ("name", "port", "forward", "no_browser", "timeout", *options.CONNECTION_KEYS),
        from_file=("port", "forward", "no_browser", *options.CONNECTION_KEYS))
    return start_command.attach(resolved, shared.make_target(host, params, resolved), ui,
                                as_json=as_json)

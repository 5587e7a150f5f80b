"""Commands and options: turns arguments into a request, runs it, prints the outcome.

The only module that exits the process: every `LabhopError` is caught once in `main`
and becomes one line on stderr and its documented exit status.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import click
from click.core import ParameterSource
from click.shell_completion import CompletionItem

from labhop import __version__, commands, completion, gpus, opening, options
from labhop.connection import Connection
from labhop.errors import ExitStatus, LabhopError
from labhop.remote import APPS
from labhop.ssh import Target
from labhop.ui import UI, JsonUI

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_IDLE_TIMEOUT = str(options.BUILT_IN_DEFAULTS["idle_timeout"])
DEFAULT_START_TIMEOUT = str(options.BUILT_IN_DEFAULTS["timeout"])
DEFAULT_QUEUE_TIMEOUT = str(options.BUILT_IN_DEFAULTS["queue_timeout"])
WATCH_INTERVAL_S = 2.0

EXIT_CODES_HELP = """\b
Exit status:
   0  done (also after Ctrl+C once the server was ready)
   1  any other error
   2  bad command line        3  bad configuration
   9  no ssh client          10  unknown host
  11  cannot connect         12  authentication refused
  13  host key unknown or changed
  14  other ssh failure      20  environment not found
  21  jupyter not found      22  --dir or PATH missing, or PATH outside --dir
  23  server exited during start-up
  24  server did not answer in time (--timeout)
  25  local port unusable    26  other remote failure
  27  no such server         28  no GPU (or none that --gpus names)
  30  Slurm refused the job
  31  Slurm job still pending at --queue-timeout (cancelled)
 130  interrupted before the server was ready
"""


def parse_duration(text: str) -> int:
    """'90', '90s', '30m', '4h', '1d' -> seconds; '0' disables (options.parse_duration)."""
    try:
        return options.parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def ssh_options(func: F) -> F:
    """The ssh options people already know; everything else comes from ~/.ssh/config."""
    decorators = [
        # click.Path: no checks (ssh makes them), but the shell completes file names.
        click.option("-F", "config_file", metavar="FILE", type=click.Path(),
                     help="ssh config file (ssh -F)."),
        click.option("-J", "jump", metavar="JUMP", help="Jump host(s), comma-separated (ssh -J)."),
        click.option("-i", "identity", metavar="KEY", multiple=True, type=click.Path(),
                     help="Identity (private key) file (ssh -i); repeatable."),
        click.option("-l", "login", metavar="USER", help="Remote user name (ssh -l)."),
        click.option("-p", "ssh_port", metavar="PORT", type=click.IntRange(1, 65535),
                     help="Remote sshd port (ssh -p)."),
        click.option("-o", "ssh_option", metavar="OPTION", multiple=True,
                     help="Any ssh option, e.g. -o ProxyJump=bastion; repeatable (ssh -o)."),
        click.option("--no-multiplex", "no_multiplex", is_flag=True, default=None,
                     help="Do not share one ssh connection: each step logs in itself and the "
                          "tunnel is an ssh of its own (always so on Windows)."),
        click.option("--persist", metavar="DURATION", default=None,
                     help="Keep labhop's connection to HOST open this long after the last "
                          "labhop for it exits, so later commands ask for no password "
                          "(at least 30s; default 0: it closes with the last labhop)."),
        click.option("--debug", is_flag=True,
                     help="Log every ssh command and remote answer; show tracebacks."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def forward_option(func: F) -> F:
    """--forward, for start and attach (checked by labhop.options, like every value)."""
    return click.option(
        "--forward", "forward", metavar="REMOTE_PORT[:LOCAL_PORT]", multiple=True,
        help="Also forward REMOTE_PORT where the server runs (HOST, or the job's node with "
             "--slurm), e.g. TensorBoard's 6006, to 127.0.0.1:LOCAL_PORT here (default: "
             "REMOTE_PORT if free, else a free port); repeatable.")(func)


# click's parameter name -> the config key (options.OPTIONS) of the same option.
_OPTION_KEYS = {
    "env_spec": "env", "app": "app", "gpu_spec": "gpus", "root_dir": "dir", "name": "name",
    "port": "port", "forward": "forward", "no_browser": "no_browser", "keep": "keep",
    "idle_timeout": "idle_timeout", "start_timeout": "timeout", "slurm_opts": "slurm",
    "queue_timeout": "queue_timeout", "no_multiplex": "multiplex", "persist": "persist",
}


def typed_options(ctx: click.Context, keys: Sequence[str] = options.ALL_KEYS
                  ) -> dict[str, options.Given]:
    """The launch options (by config key) the user typed on this command line, with how
    they were spelled there; a default click filled in is not typed."""
    given: dict[str, options.Given] = {}
    for param in ctx.command.params:
        key = _OPTION_KEYS.get(param.name or "")
        if key not in keys or ctx.get_parameter_source(param.name or "") is not (
                ParameterSource.COMMANDLINE):
            continue
        value = ctx.params[param.name or ""]
        if param.name == "no_multiplex":
            value = not value  # the flag says what the config key `multiplex` denies
        spelled = (max(param.opts, key=len) if isinstance(param, click.Option)
                   else param.human_readable_name)
        given[str(key)] = options.Given(value, spelled)
    return given


def resolve_options(host: str, keys: Sequence[str] = options.ALL_KEYS,
                    from_file: Sequence[str] = options.ALL_KEYS) -> options.Options:
    """This command's options for `host`: the command line, the config file, the built-ins
    (see labhop.options); `keys` are those the command line may set."""
    return options.resolve(host, typed_options(click.get_current_context(), keys),
                           from_file=from_file)


def make_target(host: str, params: dict[str, Any],
                resolved: options.Options | None = None) -> Target:
    """The ssh target, with how to reach it (--no-multiplex, --persist) filled in from
    the config file where the command line leaves it out."""
    if resolved is None:
        resolved = resolve_options(host, options.CONNECTION_KEYS, options.CONNECTION_KEYS)
    return Target(
        host=host,
        config_file=params.get("config_file"),
        jump=params.get("jump"),
        identity_files=tuple(params.get("identity") or ()),
        login=params.get("login"),
        port=params.get("ssh_port"),
        options=tuple(params.get("ssh_option") or ()),
        multiplex=resolved.multiplex,
        persist_s=resolved.persist,
    )


# The group's own options: any other first word means `labhop start ...`.
GROUP_OPTIONS = ("-h", "--help", "-V", "--version")


def complete_host(ctx: click.Context, param: click.Parameter, incomplete: str
                  ) -> list[CompletionItem]:
    """HOST: the hosts of the ssh config (the `-F FILE` typed before it, else
    ~/.ssh/config) and of config.toml. Reads files only; never fails."""
    config_file = ctx.params.get("config_file")
    return _host_items(incomplete, config_file if isinstance(config_file, str) else None)


def _host_items(incomplete: str, config_file: str | None = None) -> list[CompletionItem]:
    return [CompletionItem(name)
            for name in completion.host_candidates(incomplete, config_file)]


def complete_env(ctx: click.Context, param: click.Parameter, incomplete: str
                 ) -> list[CompletionItem]:
    return [CompletionItem(kind) for kind in completion.env_candidates(incomplete)]


JSON_HELP = ("For editors and scripts: JSON lines on stdout (progress, then ready with "
             "url, port, token, host, name, pid; stopped or error with code last); text "
             "goes to stderr; no browser.")
# The commands that take --json as a session's event stream (see JsonUI).
_SESSION_COMMANDS = ("start", "attach")


def _session_ui(*, quiet: bool, as_json: bool) -> UI:
    """start's and attach's UI; `main` reports their errors through the same one."""
    ui = JsonUI(quiet=quiet) if as_json else UI(quiet=quiet)
    click.get_current_context().ensure_object(dict)["ui"] = ui
    return ui


class LabhopGroup(click.Group):
    """`labhop HOST` is short for `labhop start HOST`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Completing `labhop gamer --e<Tab>` parses the line as `main` runs it: as start's.
        if ctx.resilient_parsing and args and args[0] not in self.commands and (
                args[0] not in GROUP_OPTIONS):
            args = ["start", *args]
        return super().parse_args(ctx, args)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        """The first word: a command, or a HOST (`labhop HOST`), or start's options
        (`labhop --env ... HOST`) besides the group's own."""
        items = super().shell_complete(ctx, incomplete)
        try:
            if incomplete.startswith("-"):
                seen = {item.value for item in items}
                with start.make_context("start", [], parent=ctx,
                                        resilient_parsing=True) as sub:
                    items += [item for item in start.shell_complete(sub, incomplete)
                              if item.value not in seen]
            else:
                items += _host_items(incomplete)
        except Exception:  # completion must never fail; commands are still offered
            logging.getLogger(__name__).debug("completion failed", exc_info=True)
        return items

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write("Usage: labhop [OPTIONS] HOST [PATH] [-- JUPYTER_ARGS...]\n"
                        "       labhop COMMAND [ARGS]...\n")


@click.group(cls=LabhopGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EXIT_CODES_HELP)
@click.version_option(__version__, "-V", "--version", prog_name="labhop")
def cli() -> None:
    """Jupyter on your remote GPU machine, in your local browser, with one command.

    \b
      labhop gamer                        JupyterLab on ssh host 'gamer', browser opens
      labhop gamer --env conda:pytorch --dir ~/proj
      labhop gamer notebooks/train.ipynb  the browser opens that notebook
      labhop gamer --app notebook -- --ServerApp.terminals_enabled=False

    HOST is anything ssh accepts: an alias from ~/.ssh/config, user@host, an address.
    labhop uses your OpenSSH client and config (keys, agents, ProxyJump, 2FA prompts).
    Run `labhop start --help` for every option of the main command.
    """


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("host", shell_complete=complete_host)
@click.argument("path", required=False, default=None)
@click.option("--env", "env_spec", metavar="SPEC", shell_complete=complete_env,
              help="Environment to start Jupyter in: conda:NAME, mamba:NAME, "
                   "micromamba:NAME, venv:PATH, module:NAME[,NAME], or cmd:'SHELL TEXT'. "
                   "Default: the login shell's PATH.")
@click.option("--app", type=click.Choice(APPS), default="lab", show_default=True,
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
              help="Local port for the browser (default: a stable port per host, "
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
@click.option("-q", "--quiet", is_flag=True, help="Print only the URL and errors.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@ssh_options
@click.pass_context
def start(ctx: click.Context, /, host: str, path: str | None, quiet: bool, as_json: bool,
          **params: Any) -> int:
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
    ui = _session_ui(quiet=quiet, as_json=as_json)
    resolved = resolve_options(host)  # what was typed, else the config file's; checked
    from labhop import session  # noqa: PLC0415 -- keeps `ls` quick

    request = session.StartRequest(
        target=make_target(host, params, resolved),
        app=resolved.app,
        env=resolved.env,
        root_dir=resolved.dir,
        name=resolved.name,
        port=resolved.port,
        forwards=resolved.forward,
        open_browser=not (resolved.no_browser or as_json),
        keep=resolved.keep,
        idle_timeout=resolved.idle_timeout,
        start_timeout=float(resolved.timeout or 1),
        jupyter_args=tuple(ctx.obj.get("jupyter_args", ())),
        slurm=resolved.slurm,
        queue_timeout=float(resolved.queue_timeout or 1),
        gpus=resolved.gpus,
        open_path=opening.normalize(path) if path is not None else "",
    )
    return session.start(request, ui)


@cli.command()
@click.argument("host", shell_complete=complete_host)
@click.argument("name", required=False, default="")
@click.option("--port", type=click.IntRange(1, 65535), metavar="N",
              help="Local port (default: a stable port per host, or a free one).")
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
    ui = _session_ui(quiet=quiet, as_json=as_json)
    from labhop import session  # noqa: PLC0415 -- keeps `ls` quick

    # NAME, --port, --forward, --no-browser, --timeout as typed; the config file supplies
    # --port, --forward, --no-browser and how to connect (a config `name` or `timeout` is
    # start's).
    resolved = resolve_options(
        host, ("name", "port", "forward", "no_browser", "timeout", *options.CONNECTION_KEYS),
        from_file=("port", "forward", "no_browser", *options.CONNECTION_KEYS))
    request = session.StartRequest(
        target=make_target(host, params, resolved),
        name=resolved.name,
        port=resolved.port,
        forwards=resolved.forward,
        open_browser=not (resolved.no_browser or as_json),
        start_timeout=float(resolved.timeout or 1),
    )
    return session.attach(request, ui)


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


@cli.command(name="ls")
@click.argument("host", shell_complete=complete_host)
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@ssh_options
def list_command(host: str, as_json: bool, **params: Any) -> int:
    """List the labhop servers running on HOST.

    STATE is 'attached' while a labhop is connected to the server, 'kept' for a server
    started with --keep, and 'owner gone' when the labhop that started it vanished
    (it stops itself after its --idle-timeout). Entries of servers that died are
    cleaned up, never shown as running.
    """
    ui = UI()
    rows, cleaned = commands.list_servers(make_target(host, params), ui=ui)
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
              _age(row.age_s), row.state, row.pid,
              "-" if row.kernels is None else str(row.kernels)] for row in rows]
    if any(row.jobid for row in rows):
        headers += ["JOB", "NODE", "TIME LEFT"]
        for row, line in zip(rows, cells, strict=True):
            left = "-" if row.time_left_s is None else _age(row.time_left_s)
            line += [f"{row.jobid} {row.job_state}" if row.jobid else "-", row.node, left]
    ui.table(headers, cells)
    return ExitStatus.OK


@cli.command()
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
    stopped = commands.stop_servers(make_target(host, params), name, stop_all=stop_all, ui=ui)
    for item in stopped:
        kernels = "" if item.kernels is None else (
            f", {item.kernels} kernel{'s' if item.kernels != 1 else ''}")
        forced = "; it had to be killed (SIGKILL)" if item.signal == "KILL" else ""
        ui.done(f"stopped '{item.name}' on {host} (pid {item.pid}{kernels}){forced}")
    return ExitStatus.OK


@cli.command()
@click.argument("host", shell_complete=complete_host)
@click.argument("name", required=False, default="")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl+C.")
@click.option("-n", "--lines", type=click.IntRange(1, 100000), default=100, show_default=True,
              help="How many of the last lines to show.")
@ssh_options
def logs(host: str, name: str, follow: bool, lines: int, **params: Any) -> int:
    """Show the Jupyter log of a server on HOST (NAME may be left out if only one runs)."""
    ui = UI()
    text = commands.show_logs(make_target(host, params), name, lines=lines, follow=follow,
                              ui=ui)
    if text:
        ui.raw(text)
    return ExitStatus.OK


@cli.command(name="gpus")
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
    A host without nvidia-smi or without GPUs exits with status 28.
    """
    ui = UI()
    with commands.connected(make_target(host, params), ui) as backend:
        report = commands.fetch_gpus(backend.conn)
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
            report = commands.fetch_gpus(conn)
            gpus.require_gpus(report, host)


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
  28  no GPU                 30  Slurm command or partition missing
"""


@cli.command(epilog=DOCTOR_HELP)
@click.argument("host")
@click.option("--env", "env_spec", metavar="SPEC",
              help="The environment to check, as for start (conda:NAME, venv:PATH, ...). "
                   "Default: the host's `env` in config.toml, else the login PATH.")
@click.option("--app", type=click.Choice(APPS), default="lab", show_default=True,
              help="Which Jupyter to look for.")
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
    from labhop import doctor as doctor_module  # noqa: PLC0415 -- keeps `ls` quick

    keys = ("env", "app", "slurm", *options.CONNECTION_KEYS)
    resolved = resolve_options(host, keys, from_file=keys)
    request = doctor_module.DoctorRequest(target=make_target(host, params, resolved),
                                          env=resolved.env, app=resolved.app,
                                          slurm=resolved.slurm)
    ui = UI()
    width = max(len(label) for label in doctor_module.LABELS.values())

    def show(check: doctor_module.Check) -> None:
        if not as_json:
            ui.check(check.ok, check.label, check.detail, check.fix, width=width)

    report = doctor_module.diagnose(request, show)
    if as_json:
        ui.raw(json.dumps(report.as_json(), indent=2))
    elif report.ok:
        ui.result("all checks passed")
    else:
        failures = [check for check in report.checks if check.ok is False]
        ui.result(f"{len(failures)} check{'s' if len(failures) != 1 else ''} failed; "
                  f"exit status {int(report.exit_status)} ({failures[0].label})")
    return report.exit_status


# ---------------------------------------------------------------------------------------
_REDACT = re.compile(r"(token[=: ]+|token=)[0-9a-fA-F]{16,}")


class _RedactTokens(logging.Filter):
    """Debug logs get pasted into bug reports: keep tokens out of them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _REDACT.sub(r"\1<redacted>", record.getMessage())
        record.args = ()
        return True


def _setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("debug %(name)s: %(message)s"))
    handler.addFilter(_RedactTokens())
    root = logging.getLogger("labhop")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)


def _split_jupyter_args(args: list[str]) -> tuple[list[str], list[str]]:
    if "--" in args:
        index = args.index("--")
        return args[:index], args[index + 1:]
    return args, []


def _click_error(ui: UI, exc: click.ClickException, command: str) -> int:
    """click's own complaint (missing HOST, unknown option, bad choice or number) as
    labhop's one error line, plus where to read the command's options; exit 2."""
    no_args_help = getattr(click.exceptions, "NoArgsIsHelpError", None)
    if no_args_help is not None and isinstance(exc, no_args_help):
        exc.show()  # plain `labhop`: the help, as before
        return int(exc.exit_code)
    ui.error(" ".join(exc.format_message().split()))
    if isinstance(exc, click.UsageError):
        # Some of click's parser errors carry no context; the subcommand is known anyway.
        path = exc.ctx.command_path if exc.ctx is not None else (
            f"labhop {command}" if command in cli.commands else "labhop")
        sys.stderr.write(f"Try '{path} --help' for help.\n")
    return exc.exit_code


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args, jupyter_args = _split_jupyter_args(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args
    _setup_logging(debug)
    first = args[0] if args else ""
    if first and first not in cli.commands and first not in GROUP_OPTIONS:
        args = ["start", *args]
    obj: dict[str, Any] = {"jupyter_args": jupyter_args}
    # The command's own UI once it has one (see _session_ui); before that (a bad option),
    # a --json session's errors are JSON too.
    wants_json = bool(args) and args[0] in _SESSION_COMMANDS and "--json" in args
    fallback = JsonUI() if wants_json else UI()
    try:
        status = cli.main(args, prog_name="labhop", standalone_mode=False, obj=obj)
    except click.exceptions.Abort:
        status = ExitStatus.INTERRUPTED
    except click.ClickException as exc:
        status = _click_error(obj.get("ui", fallback), exc, args[0] if args else "")
    except LabhopError as exc:
        if debug:
            logging.getLogger("labhop").exception("traceback")
        obj.get("ui", fallback).error(str(exc), exc.details)
        status = exc.status
    except KeyboardInterrupt:
        status = ExitStatus.INTERRUPTED
    obj.get("ui", fallback).end(int(status or 0))
    sys.exit(int(status or 0))

"""What several commands share on the command line: the ssh options, `--forward`, and
turning what was typed into checked options (`config.options`) and an ssh `Target`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from labhop.config import options
from labhop.ssh.target import Target
from labhop.ui import UI, JsonUI

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_IDLE_TIMEOUT = str(options.BUILT_IN_DEFAULTS["idle_timeout"])
DEFAULT_START_TIMEOUT = str(options.BUILT_IN_DEFAULTS["timeout"])
DEFAULT_QUEUE_TIMEOUT = str(options.BUILT_IN_DEFAULTS["queue_timeout"])
DEFAULT_WALLTIME_WARNINGS = str(options.BUILT_IN_DEFAULTS["walltime_warnings"])

JSON_HELP = ("For editors and scripts: JSON lines on stdout (progress, then ready with "
             "url, port, token, host, name, pid; stopped or error with code last); text "
             "goes to stderr; no browser.")


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
    """--forward, for start and attach (checked by config.options, like every value)."""
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
    "queue_timeout": "queue_timeout", "walltime_warnings": "walltime_warnings",
    "no_multiplex": "multiplex", "persist": "persist",
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
    (see config.options); `keys` are those the command line may set."""
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


def session_ui(*, quiet: bool, as_json: bool) -> UI:
    """start's and attach's UI; `main` reports their errors through the same one."""
    ui = JsonUI(quiet=quiet) if as_json else UI(quiet=quiet)
    click.get_current_context().ensure_object(dict)["ui"] = ui
    return ui

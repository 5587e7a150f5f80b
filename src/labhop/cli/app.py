"""The `labhop` group: its help, and each command loaded only when it runs."""

from __future__ import annotations

import importlib

import click
from click.shell_completion import CompletionItem

from labhop import __version__, debuglog
from labhop.cli.registry import COMMANDS, with_command

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
  29  the server ended by itself while attached (idle timeout, crash)
  30  Slurm refused the job
  31  Slurm job still pending at --queue-timeout (a start cancels it)
  32  Slurm job reached its walltime while attached
  70  internal error (a bug in labhop: please report it)
 130  interrupted before the server was ready
"""


def load_command(name: str) -> click.Command:
    module, attr = COMMANDS[name]
    command = getattr(importlib.import_module(module), attr)
    assert isinstance(command, click.Command)
    return command


class LabhopGroup(click.Group):
    """`labhop HOST` is short for `labhop start HOST`; each command is imported when it is
    used (see registry.COMMANDS)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name) if cmd_name in COMMANDS else None

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Completing `labhop gamer --e<Tab>` parses the line as `main` runs it: as start's.
        if ctx.resilient_parsing:
            args = with_command(args)
        return super().parse_args(ctx, args)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        """The first word: a command, or a HOST (`labhop HOST`), or start's options
        (`labhop --env ... HOST`) besides the group's own."""
        items = super().shell_complete(ctx, incomplete)
        try:
            if incomplete.startswith("-"):
                seen = {item.value for item in items}
                start = load_command("start")
                with start.make_context("start", [], parent=ctx,
                                        resilient_parsing=True) as sub:
                    items += [item for item in start.shell_complete(sub, incomplete)
                              if item.value not in seen]
            else:
                from labhop.cli import completion  # noqa: PLC0415 -- only at a Tab

                items += completion.host_items(incomplete)
        except Exception:  # completion must never fail; commands are still offered
            debuglog.get(__name__).debug("completion failed", exc_info=True)
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


def group_help() -> str:
    """`labhop --help` as click renders it (the front door prints a copy: help.txt)."""
    with cli.make_context("labhop", [], resilient_parsing=True, terminal_width=80,
                          max_content_width=80) as ctx:
        return cli.get_help(ctx) + "\n"

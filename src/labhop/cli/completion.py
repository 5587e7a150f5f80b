"""Shell completion: the candidates click offers, and the bash script it sends.

    eval "$(_LABHOP_COMPLETE=bash_source labhop)"      # in ~/.bashrc (zsh: zsh_source)

The candidates come from `config.hosts` (files only; completion connects nowhere and
never fails).
"""

from __future__ import annotations

import click
from click.shell_completion import BashComplete, CompletionItem, add_completion_class


def host_items(incomplete: str, config_file: str | None = None) -> list[CompletionItem]:
    from labhop.config import hosts  # noqa: PLC0415 -- only at a Tab, not at every run

    return [CompletionItem(name) for name in hosts.host_candidates(incomplete, config_file)]


def complete_host(ctx: click.Context, param: click.Parameter, incomplete: str
                  ) -> list[CompletionItem]:
    """HOST: the hosts of the ssh config (the `-F FILE` typed before it, else
    ~/.ssh/config) and of config.toml. Reads files only; never fails."""
    config_file = ctx.params.get("config_file")
    return host_items(incomplete, config_file if isinstance(config_file, str) else None)


def complete_env(ctx: click.Context, param: click.Parameter, incomplete: str
                 ) -> list[CompletionItem]:
    from labhop.config import hosts  # noqa: PLC0415 -- only at a Tab, not at every run

    return [CompletionItem(kind) for kind in hosts.env_candidates(incomplete)]


# bash appends a space after a single candidate; after `conda:` the user still has the name
# to type. click's script has no such case, so labhop's bash script adds one line to it
# (the rest of click's protocol is unchanged). If click's script ever changes shape, the
# line is simply not added.
_BASH_PLAIN = "            COMPREPLY+=($value)\n"
_BASH_NOSPACE = "            [[ $value == *: ]] && compopt -o nospace\n"


class LabhopBashComplete(BashComplete):
    source_template = BashComplete.source_template.replace(
        _BASH_PLAIN, _BASH_PLAIN + _BASH_NOSPACE, 1)


add_completion_class(LabhopBashComplete, "bash")

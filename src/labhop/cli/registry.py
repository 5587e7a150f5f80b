"""The commands, by name, and where each lives: read by the front door without click.

A short command imports only its own files: `labhop ls` never loads the session, the
doctor or rich's tables it does not draw.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: see cli/main.py
if TYPE_CHECKING:
    from collections.abc import Sequence

# name -> (module, the click command in it); the order is `labhop --help`'s.
COMMANDS: dict[str, tuple[str, str]] = {
    "start": ("labhop.cli.start", "start"),
    "attach": ("labhop.cli.start", "attach"),
    "ls": ("labhop.cli.ls", "list_command"),
    "stop": ("labhop.cli.stop", "stop"),
    "logs": ("labhop.cli.logs", "logs"),
    "gpus": ("labhop.cli.gpus", "gpus_command"),
    "doctor": ("labhop.cli.doctor", "doctor"),
}
# The group's own options: any other first word means `labhop start ...`.
GROUP_OPTIONS = ("-h", "--help", "-V", "--version")
# The commands that take --json as a session's event stream (see ui.JsonUI).
SESSION_COMMANDS = ("start", "attach")


def with_command(args: Sequence[str]) -> list[str]:
    """`labhop HOST ...` is short for `labhop start HOST ...`: the one place that says so."""
    if args and args[0] not in COMMANDS and args[0] not in GROUP_OPTIONS:
        return ["start", *args]
    return list(args)

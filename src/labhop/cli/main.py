"""The front door: `labhop ARGS` in, one exit status out.

The only place that exits the process. Every `LabhopError` becomes one line on stderr and
its documented exit status; any other exception is a bug, and still one line (exit 70,
with `--traceback` to see it). `--version` and `--help` answer without loading click.
"""

from __future__ import annotations

import os
import sys

from labhop import __version__
from labhop.cli.registry import COMMANDS, SESSION_COMMANDS, first_word_problem, with_command

# Not typing.TYPE_CHECKING: importing typing alone costs a quarter of Python's own start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn

# `labhop --help` as click renders it, kept beside this file so that the answer costs no
# import of click; tests/unit/test_structure.py checks that it is click's word for word.
# (os.path, not pathlib: this answer must not pay for importing pathlib.)
HELP_FILE = os.path.join(os.path.dirname(__file__), "help.txt")
# Set by click's completion protocol: the shell asks for candidates.
COMPLETION_VARIABLE = "_LABHOP_COMPLETE"
TRACEBACK_FLAG = "--traceback"


def split_jupyter_args(args: list[str]) -> tuple[list[str], list[str]]:
    """labhop's arguments, and those after `--`, which go to Jupyter."""
    if "--" in args:
        index = args.index("--")
        return args[:index], args[index + 1:]
    return args, []


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args, jupyter_args = split_jupyter_args(list(sys.argv[1:] if argv is None else argv))
    if args in (["-V"], ["--version"]):
        sys.stdout.write(f"labhop, version {__version__}\n")
        sys.exit(0)
    if args in (["-h"], ["--help"]):
        with open(HELP_FILE, encoding="utf-8") as help_file:
            sys.stdout.write(help_file.read())
        sys.exit(0)
    show_traceback = TRACEBACK_FLAG in args
    args = [arg for arg in args if arg != TRACEBACK_FLAG]
    config_file = args[args.index("-F") + 1] if "-F" in args[:-1] else None
    problem = first_word_problem(args, lambda word: _known_host(word, config_file))
    if problem is not None:
        sys.stderr.write(f"labhop: error: {problem}\nTry 'labhop --help' for help.\n")
        sys.exit(2)
    sys.exit(_run(with_command(args), jupyter_args, show_traceback=show_traceback))


def _known_host(word: str, config_file: str | None = None) -> bool:
    """Whether `word` is a Host of the user's ssh config (the -F FILE typed, else
    ~/.ssh/config) or of config.toml."""
    from labhop.config import hosts  # only for a word that names no command

    return word in hosts.host_candidates(word, config_file)


def _run(args: list[str], jupyter_args: list[str], *, show_traceback: bool) -> int:
    import click

    from labhop import debuglog
    from labhop.cli import app

    if COMPLETION_VARIABLE in os.environ:
        from labhop.cli import completion  # noqa: F401 -- registers labhop's bash script
    from labhop.errors import ExitStatus, LabhopError
    from labhop.ui import UI, JsonUI

    debug = "--debug" in args
    debuglog.set_enabled(debug)
    if debug:
        from labhop.cli import logs_setup

        logs_setup.setup_logging()
    log = debuglog.get("labhop")
    obj: dict[str, Any] = {"jupyter_args": jupyter_args}
    # The command's own UI once it has one (see shared.session_ui); before that (a bad
    # option), a --json session's errors are JSON too.
    wants_json = bool(args) and args[0] in SESSION_COMMANDS and "--json" in args
    fallback = JsonUI() if wants_json else UI()
    try:
        status = app.cli.main(args, prog_name="labhop", standalone_mode=False, obj=obj)
    except click.exceptions.Abort:
        status = ExitStatus.INTERRUPTED
    except click.ClickException as exc:
        status = _click_error(obj.get("ui", fallback), exc, args[0] if args else "")
    except LabhopError as exc:
        log.debug("traceback", exc_info=True)
        obj.get("ui", fallback).error(str(exc), exc.details)
        status = exc.status
        if status == ExitStatus.USAGE:  # a bad value typed: where to read what it takes
            sys.stderr.write(f"Try '{_command_path(args)} --help' for help.\n")
    except KeyboardInterrupt:
        status = ExitStatus.INTERRUPTED
    except Exception as exc:  # the last line of defence: a bug, said in one line
        if show_traceback:
            raise
        log.debug("internal error", exc_info=True)
        summary = " ".join(str(exc).split()) or "no message"
        obj.get("ui", fallback).error(
            f"internal error: {type(exc).__name__}: {summary[:300]} (run again with "
            f"{TRACEBACK_FLAG} and report it)")
        status = ExitStatus.INTERNAL
    obj.get("ui", fallback).end(int(status or 0))
    return int(status or 0)


def _command_path(args: Sequence[str]) -> str:
    """'labhop start', 'labhop attach': the command the arguments ran."""
    return f"labhop {args[0]}" if args and args[0] in COMMANDS else "labhop"


def _click_error(ui: Any, exc: Any, command: str) -> int:
    """click's own complaint (missing HOST, unknown option, bad choice or number) as
    labhop's one error line, plus where to read the command's options; exit 2."""
    import click

    no_args_help = getattr(click.exceptions, "NoArgsIsHelpError", None)
    if no_args_help is not None and isinstance(exc, no_args_help):
        exc.show()  # plain `labhop`: the help, as before
        return int(exc.exit_code)
    ui.error(" ".join(exc.format_message().split()))
    if isinstance(exc, click.UsageError):
        # Some of click's parser errors carry no context; the subcommand is known anyway.
        path = exc.ctx.command_path if exc.ctx is not None else (
            f"labhop {command}" if command in COMMANDS else "labhop")
        sys.stderr.write(f"Try '{path} --help' for help.\n")
    return int(exc.exit_code)

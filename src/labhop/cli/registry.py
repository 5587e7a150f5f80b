"""The commands, by name, and where each lives: read by the front door without click.

A short command imports only its own files: `labhop ls` never loads the session, the
doctor or rich's tables it does not draw.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: see cli/main.py
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

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


# Words people type for a command labhop calls otherwise.
ALIASES = {"list": "ls", "status": "ls", "ps": "ls", "kill": "stop", "rm": "stop",
           "log": "logs", "gpu": "gpus", "nvidia-smi": "gpus", "connect": "attach",
           "run": "start", "check": "doctor", "help": "--help"}


def first_word_problem(args: Sequence[str], known_host: Callable[[str], bool]) -> str | None:
    """What is wrong with `labhop WORD ...` before anything connects: a WORD that names no
    command and cannot be a host (a command misspelt or called otherwise, a path where
    the host goes), or a command name where `labhop HOST PATH` takes the PATH. None when
    nothing is; `known_host` says whether a word is a Host of the user's ssh config (that
    one is a host, whatever it is called)."""
    if not args or args[0] in COMMANDS or args[0].startswith("-"):
        return None
    word = args[0]
    if known_host(word):
        return _path_problem(args)
    for_a_host = f" (for a host called {word}: labhop start {word})"
    if word in ALIASES:
        return f"'{word}' is not a command; did you mean: labhop {ALIASES[word]}{for_a_host}"
    close = [name for name in COMMANDS if _one_typo(word, name)]
    if close and "." not in word and "@" not in word:
        return f"'{word}' is not a command; did you mean: labhop {close[0]}{for_a_host}"
    if word.startswith(("/", "./", "../", "~")) or "/" in word:
        return (f"'{word}' looks like a path, not a host; the host comes first: "
                "labhop HOST [PATH]")
    return _path_problem(args)


def _path_problem(args: Sequence[str]) -> str | None:
    """`labhop gamer stop`: the PATH is a command's name, the order swapped."""
    rest = [arg for arg in args[1:] if not arg.startswith("-")]
    if len(rest) == 1 and rest[0] in COMMANDS and rest[0] != "start" and len(args) == 2:
        return (f"did you mean: labhop {rest[0]} {args[0]} (the command comes first; a "
                f"folder called {rest[0]} opens as ./{rest[0]})")
    return None


def _one_typo(word: str, name: str) -> bool:
    """`word` is `name` with one letter swapped with the next, left out, added or
    changed ("stpo", "atach", "doctorr"): a typo, not a host's name, for names of four
    letters or more."""
    if len(name) < 4 or word == name or abs(len(word) - len(name)) > 1:
        return False
    if len(word) == len(name):
        diff = [index for index, (a, b) in enumerate(zip(word, name, strict=True)) if a != b]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and word[diff[0]] == name[diff[1]]
                                  and word[diff[1]] == name[diff[0]])
    short, long = sorted((word, name), key=len)
    return any(long[:index] + long[index + 1:] == short for index in range(len(long)))

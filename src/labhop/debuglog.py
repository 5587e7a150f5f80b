"""labhop's debug log (`--debug`): every ssh command and remote answer, to stderr.

A leaf that loads `logging` only once `--debug` turns it on: every module logs through a
`debuglog.get(__name__)`, and a command run without `--debug` does not pay for importing
logging (a tenth of `labhop ls`'s own start-up).
"""

from __future__ import annotations

_enabled = False


def set_enabled(on: bool) -> None:
    """Whether debug lines go to the `labhop` logger (see cli.logs_setup), from now on."""
    global _enabled  # noqa: PLW0603 -- one switch for the process, set by the front door
    _enabled = on


def enabled() -> bool:
    return _enabled


class Logger:
    """`logging.Logger.debug`'s shape, a no-op unless `set_enabled(True)`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def debug(self, message: str, *args: object, exc_info: bool = False) -> None:
        if _enabled:
            import logging  # noqa: PLC0415 -- only with --debug

            logging.getLogger(self.name).debug(message, *args, exc_info=exc_info)


def get(name: str) -> Logger:
    return Logger(name)

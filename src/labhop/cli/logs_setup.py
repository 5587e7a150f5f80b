"""labhop's own log: `--debug` writes every ssh command and remote answer to stderr, with
tokens redacted (debug logs get pasted into bug reports)."""

from __future__ import annotations

import logging
import re
import sys

_REDACT = re.compile(r"(token[=: ]+|token=)[0-9a-fA-F]{16,}")


class _RedactTokens(logging.Filter):
    """Debug logs get pasted into bug reports: keep tokens out of them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _REDACT.sub(r"\1<redacted>", record.getMessage())
        record.args = ()
        return True


def setup_logging() -> None:
    """Debug lines on stderr, tokens redacted (see labhop.debuglog, which feeds them)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("debug %(name)s: %(message)s"))
    handler.addFilter(_RedactTokens())
    root = logging.getLogger("labhop")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG)

"""The one place where labhop starts local processes.

Every child gets an argv list (never a shell string) and is logged at DEBUG. Children
that must not see the terminal's Ctrl+C (every ssh that talks over the master
connection) start in their own session, so cleanup can still use them after the
user pressed Ctrl+C.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO

_LOGGER = logging.getLogger(__name__)


def run(
    argv: Sequence[str],
    *,
    input_text: str | None = None,
    timeout: float | None = None,
    new_session: bool = True,
    stderr_path: Path | None = None,
    log_output: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` to completion and capture its output as text.

    With `stderr_path`, stderr goes to that file instead of a pipe: needed for
    `ssh -f`, whose daemonised child keeps stderr open long after the parent exits.
    """
    _LOGGER.debug("run: %s", shlex.join(argv))
    stderr: int | IO[str] = subprocess.PIPE
    log_file = None
    if stderr_path is not None:
        log_file = stderr_path.open("a", encoding="utf-8")
        stderr = log_file
    try:
        result = subprocess.run(
            list(argv),
            input=input_text,
            stdin=None if input_text is not None or not new_session else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=timeout,
            start_new_session=new_session,
            check=False,
        )
    finally:
        if log_file is not None:
            log_file.close()
    _LOGGER.debug("exit %s: %s", result.returncode, shlex.join(argv[:1]))
    if result.stdout and log_output:
        _LOGGER.debug("stdout:\n%s", result.stdout.rstrip())
    if result.stderr:
        _LOGGER.debug("stderr:\n%s", result.stderr.rstrip())
    return result


def run_interactive(argv: Sequence[str], *, stderr_path: Path, timeout: float | None = None) -> int:
    """Run `argv` in the terminal's foreground (password and 2FA prompts reach the user).

    stdout is discarded: a daemonising ssh must not hold a pipe of ours open.
    """
    _LOGGER.debug("run (interactive): %s", shlex.join(argv))
    with stderr_path.open("a", encoding="utf-8") as log_file:
        result = subprocess.run(
            list(argv),
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            timeout=timeout,
            check=False,
        )
    _LOGGER.debug("exit %s: %s", result.returncode, shlex.join(argv[:1]))
    return result.returncode


def spawn(
    argv: Sequence[str],
    *,
    stdin_text: str = "",
    stdout: int | None = subprocess.DEVNULL,
    stderr: int | None = subprocess.DEVNULL,
) -> subprocess.Popen[str]:
    """Start a long-lived child in its own session, its stdin a pipe that we keep open.

    The open pipe is the child's lifeline: when labhop exits, however it dies, the pipe
    reaches EOF and the child (or the remote script behind it) knows its owner is gone.
    """
    _LOGGER.debug("spawn: %s", shlex.join(argv))
    child = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=stdout,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )
    if stdin_text:
        assert child.stdin is not None
        child.stdin.write(stdin_text)
        child.stdin.flush()
    return child


def release(child: subprocess.Popen[str], *, timeout: float = 5.0) -> None:
    """Close a spawned child's lifeline and wait for it; kill it if it lingers."""
    if child.stdin is not None and not child.stdin.closed:
        with contextlib.suppress(BrokenPipeError):
            child.stdin.close()
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()

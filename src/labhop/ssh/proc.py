"""The one place where labhop starts local processes.

Every child gets an argv list (never a shell string) and is logged at DEBUG. Children
that must not see the terminal's Ctrl+C (every ssh that talks over a master connection)
start detached from it (`oscompat.detached_kwargs`), so cleanup can still use them after
the user pressed Ctrl+C.

"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from labhop import debuglog, oscompat

_LOGGER = debuglog.get(__name__)


def _session(detached: bool) -> dict[str, object]:
    return oscompat.detached_kwargs() if detached else {}


def run(
    argv: Sequence[str],
    *,
    input_text: str | None = None,
    timeout: float | None = None,
    new_session: bool = True,
    log_output: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` to completion and capture its output as text."""
    _LOGGER.debug("run: %s", shlex.join(argv))
    result = subprocess.run(  # type: ignore[call-overload]
        list(argv),
        input=input_text,
        stdin=None if input_text is not None or not new_session else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **_session(new_session),
    )
    _LOGGER.debug("exit %s: %s", result.returncode, shlex.join(argv[:1]))
    if result.stdout and log_output:
        _LOGGER.debug("stdout:\n%s", result.stdout.rstrip())
    if result.stderr:
        _LOGGER.debug("stderr:\n%s", result.stderr.rstrip())
    return result  # type: ignore[no-any-return]


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
    stderr: int | IO[str] | None = subprocess.DEVNULL,
    detached: bool = True,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[str]:
    """Start a long-lived child, its stdin a pipe that we keep open.

    The open pipe is the child's lifeline: when labhop exits, however it dies, the pipe
    reaches EOF and the child (or the remote script behind it) knows its owner is gone.
    """
    _LOGGER.debug("spawn: %s", shlex.join(argv))
    child: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
        list(argv),
        stdin=subprocess.PIPE,
        stdout=stdout,
        stderr=stderr,
        text=True,
        errors="replace",  # what a child prints may be any bytes (a log, a file name)
        pass_fds=tuple(pass_fds),
        **_session(detached),
    )
    if stdin_text:
        assert child.stdin is not None
        child.stdin.write(stdin_text)
        child.stdin.flush()
    return child


def start_inheriting(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start `argv` with our stdout and stderr and no stdin (the guard's own child)."""
    _LOGGER.debug("start: %s", shlex.join(argv))
    return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL)


def guard_argv(argv: Sequence[str] = (), *options: str) -> list[str]:
    """`labhop.ssh.guard` around `argv`: it ends `argv` once labhop is gone (see guard)."""
    return [sys.executable, "-m", "labhop.ssh.guard", *options, "--", *argv]


def spawn_guarded(argv: Sequence[str], *, stderr_path: Path,
                  detached: bool = True) -> subprocess.Popen[str]:
    """Start `argv` under a guard: it ends with labhop, even after a kill -9 of labhop.

    Its stdout is a pipe (see `wait_for_line`); stderr goes to `stderr_path`.
    """
    with stderr_path.open("a", encoding="utf-8") as log_file:
        return spawn(guard_argv(argv), stdout=subprocess.PIPE, stderr=log_file,
                     detached=detached)


def wait_for_line(child: subprocess.Popen[str], wanted: str, *, timeout: float) -> bool:
    """Read the child's stdout until the line `wanted`; False if it exits or times out."""
    assert child.stdout is not None
    stream = child.stdout
    found = threading.Event()

    def read() -> None:
        for line in stream:
            if line.strip() == wanted:
                found.set()
                return

    # A thread, not select(): pipes cannot be select()ed on Windows.
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return found.is_set()


def lines_until(child: subprocess.Popen[str], wanted: str, *,
                timeout: float) -> tuple[bool, list[str]]:
    """The child's stdout lines up to and including the line `wanted`, and whether it
    came; if the child exits or the time is up first, (False, the lines read so far)."""
    assert child.stdout is not None
    stream = child.stdout
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))
            if line.strip() == wanted:
                found.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return found.is_set(), list(lines)


def dismiss(child: subprocess.Popen[str], message: str) -> None:
    """Say `message` on a spawned child's lifeline and close it, without waiting: the
    child ends by itself (see ssh.guard), after this process is gone if need be."""
    if child.stdin is not None and not child.stdin.closed:
        with contextlib.suppress(BrokenPipeError, OSError):
            child.stdin.write(message)
            child.stdin.close()


def release(child: subprocess.Popen[str], *, timeout: float = 5.0) -> None:
    """Close a spawned child's lifeline and wait for it; kill it if it lingers."""
    if child.stdin is not None and not child.stdin.closed:
        with contextlib.suppress(BrokenPipeError, OSError):
            child.stdin.close()
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    if child.stdout is not None:
        with contextlib.suppress(OSError):
            child.stdout.close()

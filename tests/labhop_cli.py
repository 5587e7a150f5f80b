"""Run the installed labhop CLI as a real process, the way a user's terminal does.

`run_labhop` is for commands that finish; `LabhopProcess` is for long runs (the foreground
session) that a test watches, then interrupts like a terminal's Ctrl+C.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

# After labhop exits, its pipes must reach EOF quickly; if they do not, a child it left
# behind still holds them, which would also hang `$(labhop ...)` in a user's shell.
_PIPE_DRAIN_SECONDS = 5.0


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str


class _PipeReader:
    """Reads a text pipe on a thread, line by line, so output can be inspected while it runs."""

    def __init__(self, pipe: IO[str], changed: threading.Condition) -> None:
        self._pipe = pipe
        self._changed = changed
        self._lines: list[str] = []
        self._eof = False
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _read(self) -> None:
        with self._pipe:
            for line in self._pipe:
                with self._changed:
                    self._lines.append(line)
                    self._changed.notify_all()
        # Set under the lock, so a waiter cannot miss EOF between its check and its wait.
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return "".join(self._lines)

    @property
    def at_eof(self) -> bool:
        with self._changed:
            return self._eof

    def join(self, timeout: float) -> bool:
        """Wait for EOF; False if the pipe is still open after `timeout`."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def _child_env(env_overrides: Mapping[str, str] | None) -> dict[str, str]:
    # Unbuffered, so lines reach the test as labhop prints them, not when a buffer fills.
    return {**os.environ, "PYTHONUNBUFFERED": "1", **(env_overrides or {})}


def _spawn(
    args: tuple[str, ...],
    env_overrides: Mapping[str, str] | None,
    merge_stderr: bool,
    wrapper: Sequence[str] = (),
) -> subprocess.Popen[str]:
    # A session (and process group) of its own: a test can signal the whole group the way a
    # terminal does, and a runaway group can be killed without touching pytest. `wrapper`
    # is a command that execs labhop in its place (e.g. `prlimit --nofile=N:N --`).
    return subprocess.Popen(
        [*wrapper, sys.executable, "-m", "labhop", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
        env=_child_env(env_overrides),
        start_new_session=True,
    )


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_labhop(
    *args: str, timeout: float = 60, env_overrides: Mapping[str, str] | None = None
) -> Result:
    """Run `python -m labhop ARGS` to completion; raises AssertionError if it hangs."""
    process = _spawn(args, env_overrides, merge_stderr=False)
    changed = threading.Condition()
    assert process.stdout is not None
    assert process.stderr is not None
    out, err = _PipeReader(process.stdout, changed), _PipeReader(process.stderr, changed)
    out.start()
    err.start()
    try:
        rc = process.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise AssertionError(
            f"labhop {' '.join(args)} still running after {timeout:g}s; killed.\n"
            f"stdout:\n{out.text}\nstderr:\n{err.text}"
        ) from None
    if not (out.join(_PIPE_DRAIN_SECONDS) and err.join(_PIPE_DRAIN_SECONDS)):
        raise AssertionError(
            f"labhop {' '.join(args)} exited {rc} but its output pipes stayed open: a child "
            f"it left running still holds them.\nstdout:\n{out.text}\nstderr:\n{err.text}"
        )
    return Result(rc, out.text, err.text)


class LabhopProcess:
    """A long-running labhop with stdout and stderr merged, read as it is printed; with
    `merge_stderr=False`, `output` is stdout alone and `stderr` the rest.

    Use as a context manager: on exit the whole process group is killed if still running.
    """

    def __init__(
        self,
        process: subprocess.Popen[str],
        reader: _PipeReader,
        changed: threading.Condition,
        err_reader: _PipeReader | None = None,
    ) -> None:
        self._process = process
        self._reader = reader
        self._changed = changed
        self._err_reader = err_reader

    @classmethod
    def start(
        cls,
        *args: str,
        env_overrides: Mapping[str, str] | None = None,
        merge_stderr: bool = True,
        wrapper: Sequence[str] = (),
    ) -> LabhopProcess:
        process = _spawn(args, env_overrides, merge_stderr=merge_stderr, wrapper=wrapper)
        assert process.stdout is not None
        changed = threading.Condition()
        reader = _PipeReader(process.stdout, changed)
        reader.start()
        err_reader = None
        if not merge_stderr:
            assert process.stderr is not None
            err_reader = _PipeReader(process.stderr, changed)
            err_reader.start()
        return cls(process, reader, changed, err_reader)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def output(self) -> str:
        """Everything printed so far, stdout and stderr interleaved (stdout alone when
        started with merge_stderr=False)."""
        return self._reader.text

    @property
    def stderr(self) -> str:
        """What it printed on stderr so far, when started with merge_stderr=False."""
        return self._err_reader.text if self._err_reader is not None else ""

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """The first match of `pattern` (re.MULTILINE) in the output, waiting up to `timeout`.

        Raises AssertionError with the output so far on timeout or when labhop exits first.
        Searches all output from the start, so waiting twice for one pattern returns at once.
        """
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = regex.search(self.output)
                if match:
                    return match
                if self._reader.at_eof:
                    self._process.wait()
                    problem = f"exited with {self._process.returncode}"
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    problem = f"printed nothing matching within {timeout:g}s"
                    break
                self._changed.wait(remaining)
        stderr = f"\nstderr:\n{self.stderr}" if self._err_reader is not None else ""
        raise AssertionError(
            f"labhop {problem}; waited for /{pattern}/. Output:\n{self.output}{stderr}"
        )

    def running(self) -> bool:
        return self._process.poll() is None

    def interrupt(self) -> None:
        """Ctrl+C as a terminal sends it: SIGINT to the whole foreground process group."""
        os.killpg(self._process.pid, signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL to labhop alone (`kill -9 PID`): no chance to clean up."""
        self._process.kill()

    def terminate(self) -> None:
        """SIGTERM to labhop alone, as `kill PID` would."""
        self._process.terminate()

    def wait(self, timeout: float = 30) -> int:
        """labhop's exit status; raises subprocess.TimeoutExpired if it is still running."""
        return self._process.wait(timeout)

    def __enter__(self) -> LabhopProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process.poll() is None:
            _kill_group(self._process)
        self._reader.join(_PIPE_DRAIN_SECONDS)
        if self._err_reader is not None:
            self._err_reader.join(_PIPE_DRAIN_SECONDS)

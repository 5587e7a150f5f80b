"""A small local process that ends what one labhop started, however that labhop ended.

    python -m labhop.ssh.guard [--cancel-forward ...]... [--release-master ...] [--rmtree DIR]
                           -- [ARGV...]

Its stdin is a pipe that only its labhop holds. It runs ARGV (a tunnel's ssh) as its own
child and ends it at EOF on that pipe, that is once labhop has exited, crashed or was
killed with SIGKILL; it exits itself when ARGV exits. Then it cancels the labhop's forwards
in a shared master (one --cancel-forward each: the whole set that labhop added), gives up
the labhop's share of the connection (`connection.release_master`: the last one out
closes labhop's master) and removes the labhop's run directory. At a normal exit labhop
does that itself and says so on the pipe before it closes it (`GUARD_DONE`): then the
guard only ends ARGV, and labhop need not wait for it. Any other end of the pipe is a
labhop that died, and the guard cleans up after it.

It only ever signals its own child, which it has not reaped yet: that PID cannot have
been reused by another process.

"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import sys
import threading

from labhop import oscompat
from labhop.ssh import locks, proc
from labhop.ssh.control import cancel_forward
from labhop.ssh.guard_protocol import GUARD_DONE

_TERMINATE_WAIT_S = 3.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m labhop.ssh.guard")
    parser.add_argument("--cancel-forward", nargs=4, action="append", default=[],
                        metavar=("SSH", "CONTROL_PATH", "SPEC", "HOST"))
    parser.add_argument("--release-master", nargs=5,
                        metavar=("SSH", "CONTROL_PATH", "HOST", "CREATE_LOCK", "USERS_LOCK"))
    parser.add_argument("--users-fd", type=int, default=-1)
    parser.add_argument("--rmtree", action="append", default=[])
    parser.add_argument("argv", nargs="*")
    return parser


def _ignore_stop_signals() -> None:
    # The terminal's Ctrl+C or hangup is for labhop, which then closes our pipe; a guard
    # that died of it would skip the cleanup it exists for.
    for signum in oscompat.stop_signals():
        with contextlib.suppress(OSError, ValueError):
            signal.signal(signum, signal.SIG_IGN)


def _watch_stdin(gone: threading.Event, said: bytearray) -> None:
    with contextlib.suppress(OSError, ValueError):
        while chunk := sys.stdin.buffer.read(4096):
            said += chunk[:64]
    gone.set()


def _supervise(argv: list[str], gone: threading.Event) -> int:
    if not argv:
        gone.wait()
        return 0
    child = proc.start_inheriting(argv)
    while child.poll() is None:
        if gone.wait(0.1):
            child.terminate()
            try:
                child.wait(_TERMINATE_WAIT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            break
    return child.returncode


def main(args: list[str] | None = None) -> int:
    options = _parser().parse_args(args)
    _ignore_stop_signals()
    gone = threading.Event()
    said = bytearray()
    threading.Thread(target=_watch_stdin, args=(gone, said), daemon=True).start()
    try:
        status = _supervise(options.argv, gone)
    finally:
        if not said.startswith(GUARD_DONE.encode()):  # else the command cleaned up itself
            _clean_up(options)
    return status


def _clean_up(options: argparse.Namespace) -> None:
    """What the labhop did not undo itself: its forwards, its share of the master, its
    run directory."""
    for ssh_binary, control_path, spec, host in options.cancel_forward:
        cancel_forward(ssh=ssh_binary, control_path=control_path, spec=spec, host=host)
    if options.release_master:
        ssh, control_path, host, create_lock, users_lock = options.release_master
        locks.release_master(
            options.users_fd, ssh=ssh, control_path=control_path, host=host,
            create_lock=create_lock, users_lock=users_lock)
    for path in options.rmtree:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

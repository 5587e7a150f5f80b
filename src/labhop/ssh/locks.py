"""The locks that count the users of labhop's shared master, and giving one share back.

Each command holds a shared lock on `KEY.users` for as long as it uses the master (through
its guard); creating the master and deciding to close it happen under an exclusive
`KEY.lock`. The last command out closes the master unless it was opened with `--persist`.
Small on purpose: the guard imports it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from labhop.ssh import proc
from labhop.ssh.control import control_argv

try:
    import fcntl
except ImportError:  # Windows, which never multiplexes and so never locks
    fcntl = None  # type: ignore[assignment]


def open_lock(path: Path | str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def lock(fd: int, *, exclusive: bool, blocking: bool = True) -> bool:
    """flock(2) `fd`; False if `blocking` is off and someone else holds a conflicting lock.

    flock locks belong to the open file, so a guard that inherits the descriptor holds
    the lock for its labhop, and the kernel drops it when the last holder is gone.
    """
    assert fcntl is not None, "locks are only used where ssh multiplexes (not Windows)"
    kind = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        fcntl.flock(fd, kind | (0 if blocking else fcntl.LOCK_NB))
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


def hold_create_lock(path: str, on_wait: Callable[[], None] = lambda: None) -> int:
    """The exclusive `KEY.lock`, on the file that is there now: the last labhop out removes
    the pair of lock files (under this lock), so one that was waiting on the removed file
    opens the new one and waits again. `on_wait` is called once if it has to wait."""
    waited = False
    while True:
        fd = open_lock(path)
        if not lock(fd, exclusive=True, blocking=False):
            if not waited:
                waited = True
                on_wait()
            lock(fd, exclusive=True)
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def release_master(users_fd: int, *, ssh: str, control_path: str, host: str,
                   create_lock: str, users_lock: str) -> None:
    """Give up one command's share of labhop's master; the last one out closes it.

    Without lock files (a master of one command's own) the master is closed at once.
    Runs in the command itself at a normal exit, else in `labhop.ssh.guard` after labhop
    has gone. `users_fd` shares its open file with the guard's copy, so unlocking it ends
    the share for both.
    """
    if not create_lock:
        _close_master(ssh, control_path, host)
        return
    create_fd = hold_create_lock(create_lock)
    try:
        if users_fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(users_fd, fcntl.LOCK_UN)
            os.close(users_fd)
        check_fd = open_lock(users_lock)
        try:
            if not lock(check_fd, exclusive=True, blocking=False):
                return  # another labhop still uses it
            # A --persist master is ControlPersist's to end; one it already ended only
            # leaves its log and record behind.
            if _persist_of(control_path) == 0 or not os.path.exists(control_path):
                _close_master(ssh, control_path, host)
                # No master, no user: nothing of it stays (a labhop waiting for the lock
                # opens new files, see hold_create_lock).
                for path in (users_lock, create_lock):
                    with contextlib.suppress(OSError):
                        os.unlink(path)
        finally:
            os.close(check_fd)
    finally:
        os.close(create_fd)


def _persist_of(control_path: str) -> int:
    try:
        return int(Path(control_path + ".persist").read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _close_master(ssh: str, control_path: str, host: str) -> None:
    if os.path.exists(control_path):
        # Too busy to answer: its ControlPersist ends it (MASTER_SAFETY_PERSIST_S).
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.run(control_argv(ssh, control_path, "exit", host), timeout=15)
    for suffix in (".log", ".persist"):
        with contextlib.suppress(OSError):
            os.unlink(control_path + suffix)

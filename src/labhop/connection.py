"""One connection per host, shared by every labhop command, and one lifetime for each.

Every labhop command for the same target (the same `ssh -G` result) uses one
authenticated connection: the user's own live ControlMaster when their ssh_config names
one, else labhop's master in a private per-user directory, found by a hash of that
result. So a 2FA host asks once, and `labhop ls` beside a running session pays no
handshake. labhop never closes a master that is not its own.

labhop's master is shared, so no command may simply close it. Each command holds a shared
lock on `KEY.users` for as long as it uses the master (through its guard, see
`labhop.guard`); creating the master and deciding to close it happen under an exclusive
`KEY.lock`. The last command out closes the master unless it was opened with
`--persist`, in which case OpenSSH's own ControlPersist ends it that long after its last
client. If every labhop that used it was killed outright, guards included, ControlPersist
ends it within `ssh.MASTER_SAFETY_PERSIST_S`.

`connected()` is the one way in: it holds the run directory, the signal policy and the
guard, so Ctrl+C, SIGTERM, SIGHUP or kill -9 of any command leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import platformdirs

try:
    import fcntl
except ImportError:  # Windows, which never multiplexes and so never locks
    fcntl = None  # type: ignore[assignment]

from labhop import local, oscompat, proc
from labhop.ssh import (
    DirectTransport,
    MuxTransport,
    Resolved,
    Target,
    Transport,
    control_argv,
    describe,
    master_alive,
    open_master,
    resolve,
    ssh_binary,
)

_LOGGER = logging.getLogger(__name__)

# How long a command waits for its guard to finish the cleanup on exit.
GUARD_EXIT_TIMEOUT_S = 20


# ---------------------------------------------------------------------------------------
# Signals: one policy for every command
class Interrupted(KeyboardInterrupt):
    """Ctrl+C, SIGTERM or SIGHUP: stop what we are doing and clean up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class InterruptPolicy:
    """Turns Ctrl+C, SIGTERM and SIGHUP into `Interrupted`, once.

    The first signal interrupts whatever runs. While labhop then cleans up, one more only
    says it is busy (`on_busy`), and a third gives up on the cleanup. A terminal's Ctrl+C
    often arrives twice in quick succession; it must never turn into a traceback or a
    half-done cleanup.
    """

    def __init__(self, on_busy: Callable[[], None] | None = None) -> None:
        self.on_busy = on_busy
        self.interrupted = False
        self.extra = 0

    def handler(self, signum: int, _frame: FrameType | None) -> None:
        if not self.interrupted:
            self.interrupted = True
            raise Interrupted(signum)
        self.extra += 1
        if self.extra == 1:
            if self.on_busy is not None:
                self.on_busy()
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous = {signum: signal.signal(signum, self.handler)
                    for signum in oscompat.stop_signals()}
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)


# ---------------------------------------------------------------------------------------
# Where labhop's shared masters live
def _private_dir(path: Path) -> bool:
    """Create `path` (0700) if needed; True only if it is a directory of ours that no one
    else can enter. A path another user created first is never used."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    try:
        info = path.lstat()
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        return False
    if stat.S_IMODE(info.st_mode) & 0o077:
        path.chmod(0o700)
    return True


def shared_dir() -> Path | None:
    """A private directory for labhop's masters, short enough for a ControlPath; None if
    this machine offers none (each command then uses a master of its own)."""
    if not oscompat.supports_multiplexing():
        return None
    candidates = []
    runtime = oscompat.runtime_base()
    if runtime is not None and runtime.is_dir():
        candidates.append(runtime / "labhop")
    candidates.append(Path(platformdirs.user_cache_dir("labhop")) / "ssh")
    for candidate in candidates:
        if oscompat.control_path_fits(str(candidate / ("0" * 16))) and _private_dir(candidate):
            return candidate
    return None


def user_control_path(resolved: Resolved) -> str:
    """The ControlPath of the user's own ssh config for the host ("" for none)."""
    path = resolved.settings.get("controlpath", "")
    return "" if path.lower() in ("", "none") else path


def shared_control_path(resolved: Resolved) -> Path | None:
    """Where labhop's own shared master for the host lives (None: no shared directory)."""
    base = shared_dir()
    return None if base is None else base / resolved.key()


def _open_lock(path: Path | str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def _lock(fd: int, *, exclusive: bool, blocking: bool = True) -> bool:
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


def release_master(users_fd: int, *, ssh: str, control_path: str, host: str,
                   create_lock: str, users_lock: str) -> None:
    """Give up one command's share of labhop's master; the last one out closes it.

    Without lock files (a master of one command's own) the master is closed at once.
    Runs in `labhop.guard`, after labhop has gone.
    """
    if not create_lock:
        _close_master(ssh, control_path, host)
        return
    create_fd = _open_lock(create_lock)
    try:
        _lock(create_fd, exclusive=True)
        if users_fd >= 0:
            os.close(users_fd)
        check_fd = _open_lock(users_lock)
        try:
            if not _lock(check_fd, exclusive=True, blocking=False):
                return  # another labhop still uses it
            # A --persist master is ControlPersist's to end; one it already ended only
            # leaves its log and record behind.
            if _persist_of(control_path) == 0 or not os.path.exists(control_path):
                _close_master(ssh, control_path, host)
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
        proc.run(control_argv(ssh, control_path, "exit", host), timeout=15)
    for suffix in (".log", ".persist"):
        with contextlib.suppress(OSError):
            os.unlink(control_path + suffix)


# ---------------------------------------------------------------------------------------
class Connection:
    """A connection to one host for one command: its transport, its run directory, and
    the guards that give it all back however the command ends.

    Constructing it does nothing; `open()` connects (and may prompt), `reopen()` does so
    again after the network dropped, `close()` gives everything back.
    """

    def __init__(self, target: Target, *,
                 progress: Callable[[str], None] = lambda _message: None) -> None:
        self.target = target
        self.multiplex = target.multiplex and oscompat.supports_multiplexing()
        self.persist_s = target.persist_s
        self.progress = progress
        self.ssh = ssh_binary()
        self.run_dir: Path | None = None
        self.resolved: Resolved | None = None
        self._transport: Transport | None = None
        self.master_kind = ""  # "user", "shared", "private" or "" (no multiplexing)
        self._guards: list[subprocess.Popen[str]] = []

    # -- what commands use ---------------------------------------------------------------
    @property
    def transport(self) -> Transport:
        assert self._transport is not None, "open() first"
        return self._transport

    def describe(self) -> str:
        return describe(self.target, self.resolve())

    def is_alive(self) -> bool:
        return self.transport.is_alive()

    def run_script(self, script: str, *, login: bool = False,
                   timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.transport.run_script(script, login=login, timeout=timeout)

    def start_script(self, script: str, *,
                     stdout: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
        return self.transport.start_script(script, stdout=stdout)

    # -- lifetime ------------------------------------------------------------------------
    def resolve(self) -> Resolved:
        if self.resolved is None:
            self.resolved = resolve(self.target, self.ssh)
        return self.resolved

    def open(self) -> None:
        resolved = self.resolve()
        self.run_dir = local.make_run_dir(shared_dir())
        if not self.multiplex:
            self._transport = DirectTransport(self.target, resolved, self.ssh, self.run_dir)
            self._spawn_guard()
            self.progress(f"connecting to {self.describe()} (one ssh per step)")
            return
        self._acquire_master()

    def reopen(self) -> None:
        """Connect again after the connection was lost (prompts again if the host asks)."""
        if self.multiplex:
            self._acquire_master()

    def close(self) -> None:
        """Give back the connection and remove the run directory (through the guards)."""
        for guard in reversed(self._guards):
            proc.release(guard, timeout=GUARD_EXIT_TIMEOUT_S)
        if not self._guards and self.run_dir is not None:
            local.remove_run_dir(self.run_dir)
        self._guards.clear()

    # -- masters -------------------------------------------------------------------------
    def _user_control_path(self) -> str:
        return user_control_path(self.resolve())

    def _acquire_master(self) -> None:
        """Use the user's live master, else labhop's shared one (opening it if needed).

        The guard is started before any prompt, so even a kill -9 at the password prompt
        leaves nothing behind.
        """
        assert self.run_dir is not None
        user_path = self._user_control_path()
        if user_path and master_alive(self.ssh, user_path, self.target.host):
            _LOGGER.debug("using the user's own master at %s", user_path)
            if not self._guards:
                self._spawn_guard()  # the run directory only: their master is theirs
            self._use_master(user_path, "user")
            return
        base = shared_dir()
        if base is None:
            control_path = self.run_dir / "cm"
            if not self._guards:
                self._spawn_guard("--release-master", self.ssh, str(control_path),
                                  self.target.host, "", "")
            if not master_alive(self.ssh, control_path, self.target.host):
                self._open_master(control_path)
            self._use_master(control_path, "private")
            return
        control_path = base / self.resolve().key()
        create_lock, users_lock = f"{control_path}.lock", f"{control_path}.users"
        if self.master_kind != "shared":
            # Our share of the master, handed to the guard, which gives it back at the end.
            users_fd = _open_lock(users_lock)
            try:
                _lock(users_fd, exclusive=False)
                self._spawn_guard("--release-master", self.ssh, str(control_path),
                                  self.target.host, create_lock, users_lock,
                                  "--users-fd", str(users_fd), pass_fds=(users_fd,))
            finally:
                os.close(users_fd)
        self._open_shared_master(control_path, create_lock)
        self._use_master(control_path, "shared")

    def _open_shared_master(self, control_path: Path, create_lock: str) -> None:
        create_fd = _open_lock(create_lock)
        try:
            if not _lock(create_fd, exclusive=True, blocking=False):
                self.progress(f"waiting for another labhop to finish logging in to "
                              f"{self.target.host}")
                _lock(create_fd, exclusive=True)
            if master_alive(self.ssh, control_path, self.target.host):
                _LOGGER.debug("reusing labhop's master at %s", control_path)
                return
            self._open_master(control_path)
            fd = os.open(f"{control_path}.persist", os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                         0o600)
            with os.fdopen(fd, "w") as record:
                record.write(f"{self.persist_s}\n")
        finally:
            os.close(create_fd)

    def _open_master(self, control_path: Path) -> None:
        self.progress(f"connecting to {self.describe()}")
        open_master(self.target, self.resolve(), self.ssh, control_path=control_path,
                    log_path=Path(f"{control_path}.log"), persist_s=self.persist_s)

    def _use_master(self, control_path: Path | str, kind: str) -> None:
        assert self.run_dir is not None
        self.master_kind = kind
        self._transport = MuxTransport(self.target, self.resolve(), self.ssh, self.run_dir,
                                       control_path=control_path)

    def _spawn_guard(self, *options: str, pass_fds: tuple[int, ...] = ()) -> None:
        """A guard for this command; the first one also removes the run directory, and
        is the last to finish."""
        assert self.run_dir is not None
        if not self._guards:
            options = (*options, "--rmtree", str(self.run_dir))
        guard = proc.spawn(proc.guard_argv((), *options), pass_fds=pass_fds,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._guards.append(guard)


@contextlib.contextmanager
def connected(target: Target, *,
              progress: Callable[[str], None] = lambda _message: None,
              policy: InterruptPolicy | None = None) -> Iterator[Connection]:
    """The connection for one command, from its first prompt to the last cleanup.

    SIGTERM and SIGHUP (a closed terminal) end the command like Ctrl+C does, so its
    cleanup always runs; its guard covers a kill -9.
    """
    policy = policy or InterruptPolicy()
    with policy.installed():
        conn = Connection(target, progress=progress)
        try:
            conn.open()
            yield conn
        finally:
            conn.close()

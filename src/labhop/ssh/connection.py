"""One connection per host, shared by every labhop command, and one lifetime for each.

Every labhop command for the same target (the same `ssh -G` result) uses one
authenticated connection: the user's own live ControlMaster when their ssh_config names
one, else labhop's master in a private per-user directory, found by a hash of that
result. So a 2FA host asks once, and `labhop ls` beside a running session pays no
handshake. labhop never closes a master that is not its own.

labhop's master is shared, so no command may simply close it. Each command holds a shared
lock on `KEY.users` for as long as it uses the master (through its guard, see
`labhop.ssh.guard`); creating the master and deciding to close it happen under an exclusive
`KEY.lock`. The last command out closes the master unless it was opened with
`--persist`, in which case OpenSSH's own ControlPersist ends it that long after its last
client. If every labhop that used it was killed outright, guards included, ControlPersist
ends it within `ssh.MASTER_SAFETY_PERSIST_S`.

`connected()` is the one way in: it holds the run directory, the signal policy and the
guard, so Ctrl+C, SIGTERM, SIGHUP or kill -9 of any command leaves nothing behind.

"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from labhop import debuglog, oscompat
from labhop.errors import MasterBusyError
from labhop.ssh import locks, ports, proc
from labhop.ssh.control import MASTER_SAFETY_PERSIST_S, master_alive
from labhop.ssh.failures import classify_failure
from labhop.ssh.guard_protocol import GUARD_DONE
from labhop.ssh.locks import hold_create_lock, lock, open_lock
from labhop.ssh.signals import InterruptPolicy
from labhop.ssh.target import Resolved, Target, default_options, describe, resolve, ssh_binary
from labhop.ssh.transport import DirectTransport, MuxTransport, RemoteScript, Transport

_LOGGER = debuglog.get(__name__)


# How long a command waits for its guard to finish the cleanup on exit.
GUARD_EXIT_TIMEOUT_S = 20


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


def _owned_and_closed(path: Path) -> bool:
    """A directory of ours that no one else may write to: $XDG_RUNTIME_DIR is the user's
    own only by convention, and one that another user owns or can write to would let them
    swap labhop's directory inside it for theirs. Checked, never fixed: it is not ours to
    chmod."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
            and not stat.S_IMODE(info.st_mode) & 0o022)


def shared_dir() -> Path | None:
    """A private directory for labhop's masters, short enough for a ControlPath; None if
    this machine offers none (each command then uses a master of its own)."""
    if not oscompat.supports_multiplexing():
        return None
    candidates = []
    runtime = oscompat.runtime_base()
    if runtime is not None and _owned_and_closed(runtime):
        candidates.append(runtime / "labhop")
    import platformdirs  # noqa: PLC0415 -- only where there is no runtime directory

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
        # What the guard would give back (see close): the master to release and how, and
        # this command's share of it (the same open file as the guard's copy).
        self._release: dict[str, str] | None = None
        self._users_fd = -1

    # -- what commands use ---------------------------------------------------------------
    @property
    def transport(self) -> Transport:
        assert self._transport is not None, "open() first"
        return self._transport

    def describe(self) -> str:
        return describe(self.target, self.resolve())

    def is_alive(self) -> bool:
        return self.transport.is_alive()

    def run_script(self, script: RemoteScript, *,
                   timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.transport.run_script(script, timeout=timeout)

    def start_script(self, script: RemoteScript, *,
                     stdout: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
        return self.transport.start_script(script, stdout=stdout)

    # -- lifetime ------------------------------------------------------------------------
    def resolve(self) -> Resolved:
        if self.resolved is None:
            self.resolved = resolve(self.target, self.ssh)
        return self.resolved

    def open(self) -> None:
        resolved = self.resolve()
        self.run_dir = ports.make_run_dir(shared_dir())
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
        """Give back the connection and remove the run directory.

        At a normal exit the command does it itself and tells its guard so, without
        waiting for it: a short command should not pay for a process it never needed.
        Only the last one out waits, for closing the master. The guard is what does it
        all when the command is killed before it gets here.
        """
        if self._release is not None:
            locks.release_master(self._users_fd, **self._release)
            self._users_fd = -1
        if self.run_dir is not None:
            ports.remove_run_dir(self.run_dir)
        for guard in reversed(self._guards):
            proc.dismiss(guard, GUARD_DONE)
        self._guards.clear()
        self._release = None

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
        if user_path and self._answers(user_path):
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
                self._release = {"ssh": self.ssh, "control_path": str(control_path),
                                 "host": self.target.host, "create_lock": "",
                                 "users_lock": ""}
            if not master_alive(self.ssh, control_path, self.target.host):
                self._open_master(control_path)
            self._use_master(control_path, "private")
            return
        control_path = base / self.resolve().key()
        create_lock, users_lock = f"{control_path}.lock", f"{control_path}.users"
        # Under the create lock: the last labhop out removes both lock files under it.
        create_fd = hold_create_lock(create_lock, lambda: self.progress(
            f"waiting for another labhop to finish logging in to {self.target.host}"))
        try:
            if self.master_kind != "shared":
                self._take_share(control_path, create_lock, users_lock)
            self._open_shared_master(control_path)
        finally:
            os.close(create_fd)
        self._use_master(control_path, "shared")

    def _answers(self, control_path: Path | str) -> bool:
        """Whether a master answers at `control_path`. One that is there but does not answer
        in time (a neighbour's flood of connections to a forwarded port took its file
        descriptors) is MasterBusyError, one line and a code: each step over it would hang
        until the flood ends, and a new master in its place would cut off every labhop on
        it. The servers behind it are not touched."""
        try:
            return master_alive(self.ssh, control_path, self.target.host, busy_is_alive=False)
        except MasterBusyError:
            raise MasterBusyError(
                f"the connection to {self.target.host} is too busy to answer (many connections "
                "at once to a forwarded port?); its servers keep running: retry once it "
                "answers") from None

    def _take_share(self, control_path: Path, create_lock: str, users_lock: str) -> None:
        """Our share of the master, handed to the guard too, which gives it back if this
        command cannot (see close)."""
        users_fd = open_lock(users_lock)
        try:
            lock(users_fd, exclusive=False)
            self._spawn_guard("--release-master", self.ssh, str(control_path),
                              self.target.host, create_lock, users_lock,
                              "--users-fd", str(users_fd), pass_fds=(users_fd,))
        except BaseException:
            os.close(users_fd)
            raise
        self._users_fd = users_fd
        self._release = {"ssh": self.ssh, "control_path": str(control_path),
                         "host": self.target.host, "create_lock": create_lock,
                         "users_lock": users_lock}

    def _open_shared_master(self, control_path: Path) -> None:
        """Reuse labhop's live master, else open it (the create lock is held)."""
        if self._answers(control_path):
            _LOGGER.debug("reusing labhop's master at %s", control_path)
            return
        self._open_master(control_path)
        fd = os.open(f"{control_path}.persist", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as record:
            record.write(f"{self.persist_s}\n")

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


def open_master(target: Target, resolved: Resolved, ssh: str, *, control_path: Path,
                log_path: Path, persist_s: int) -> None:
    """Start a ControlMaster; its prompts (password, 2FA, host key) reach the terminal.

    `-f`: once logged in it detaches into its own session, so a terminal's Ctrl+C reaches
    labhop but not the connection that labhop still needs to stop the server.
    """
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    oscompat.raise_open_file_limit()
    # A master killed without cleanup leaves its socket behind, and a new master would
    # then run without multiplexing.
    control_path.unlink(missing_ok=True)
    argv = [
        ssh, "-M", "-N", "-f",
        "-S", str(control_path),
        "-o", f"ControlPersist={max(persist_s, MASTER_SAFETY_PERSIST_S)}s",
        # Forwards from ssh_config (e.g. the LocalForward 8888 of a manual Jupyter routine)
        # are not ours to open, and one already in use would fail the master.
        "-o", "ClearAllForwardings=yes",
        *target.user_args(),
        *default_options(resolved),
        "--", target.host,
    ]
    returncode = proc.run_interactive(argv, stderr_path=log_path)
    if returncode != 0 or not master_alive(ssh, control_path, target.host):
        stderr = log_path.read_text(encoding="utf-8", errors="replace")
        raise classify_failure(stderr, host=target.host, who=describe(target, resolved))

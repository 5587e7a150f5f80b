"""Where a server runs: one `Backend` interface, one class per place.

`HostBackend` runs Jupyter on the host we ssh into; `SlurmBackend` runs it as a batch job
from a login node. Every command picks its backend from the server's state record
(`backend_for_entry`), or from the launch options (`backend_for_launch`), so the
supervisor in `session` and the commands never ask which one they have.

Adding a backend (PBS, LSF, Kubernetes) means one new class with `kind`, `entry_shell`,
`launch`, `status`, `stop` and `health` (and `gpus` where it can see them), registered in
`BACKENDS`; `list`, `find`, `logs` and ownership come from the state directory, which
every backend shares. `entry_shell` is the sh that tells the other scripts what one of its
state entries is (alive? where? what does `ls` show?): see sh/host_entry.sh. No script
asks which backend it deals with; they call `alive_KIND` for the kind the entry names.

"""

from __future__ import annotations

import abc
import dataclasses
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from labhop import gpus
from labhop.errors import (
    EnvNotFoundError,
    JupyterNotFoundError,
    RemoteError,
    RootDirMissingError,
    ServerNotFoundError,
    SlurmError,
    SSHError,
    StartTimeoutError,
)
from labhop.remote import jupyter, protocol, scripts, squeue
from labhop.remote.compose import Script
from labhop.ssh import proc
from labhop.ssh.connection import Connection

SENTINEL_ERRORS: dict[int, type[RemoteError]] = {
    protocol.Exit.ENV_NOT_FOUND: EnvNotFoundError,
    protocol.Exit.JUPYTER_NOT_FOUND: JupyterNotFoundError,
    protocol.Exit.ROOT_DIR_MISSING: RootDirMissingError,
    protocol.Exit.STATE_UNUSABLE: RemoteError,
    protocol.Exit.SLURM_REFUSED: SlurmError,
    protocol.Exit.START_TIMEOUT: StartTimeoutError,
}


@dataclass(frozen=True)
class Server:
    """A running server as the remote reported it."""

    name: str
    token: str
    endpoint: str  # "unix:/path" or "tcp:HOST:PORT"
    pid: str
    node: str
    existing: bool
    jobid: str = ""  # the batch job that runs it, for a backend with a queue
    note: str = ""  # what the launch has to say (how long the job waited), or ""
    # The PATH the first browser open shows, relative to the root, and "file" or "dir"
    # (see labhop.opening); "" when none was asked for.
    open_path: str = ""
    open_kind: str = ""

    @property
    def transport(self) -> str:
        return self.endpoint.partition(":")[0]

    def forward_target(self) -> str:
        """The remote end of `ssh -L`: a socket path, or host:port."""
        return self.endpoint.partition(":")[2]


@dataclass(frozen=True)
class Status:
    known: bool
    alive: bool
    listening: bool | None
    log: str
    job: squeue.JobState | None = None
    ended_as: str = ""  # a job that left the queue: its final state, if Slurm still says


@dataclass(frozen=True)
class Health:
    """How a running server is doing, as its backend sees it (checked while attached)."""

    alive: bool
    # Time until the backend ends it (a job's walltime); None: no limit, or none known.
    time_left_s: int | None = None
    # Whether its state entry is still there: `labhop stop` removes it, a server that
    # ends by itself (idle timeout, crash, walltime) leaves it for the log.
    known: bool = True
    # Why it ended, where the backend knows: a job's final Slurm state ("TIMEOUT").
    ended_as: str = ""


@dataclass(frozen=True)
class Ownership:
    """A labhop's session with a server (see Backend.hold_ownership): it lasts as long as
    `child` runs; `browser_tokens`: the server takes the session's own browser token (a
    server without jupyter_server 2's IdentityProvider takes only its own token)."""

    child: subprocess.Popen[str]
    browser_tokens: bool


# How long the host may take to confirm a session (an owner script's first lines).
OWNERSHIP_TIMEOUT_S = 30.0


@dataclass
class BackendOptions:
    """What a launch asks of the backend beyond the server itself."""

    sbatch_args: tuple[str, ...] = ()
    queue_timeout: float = 900.0
    progress: Callable[[str], None] = lambda _message: None
    # A --json event: event("queued", reason=...).
    event: Callable[..., None] = lambda _name, **_fields: None


def script_failure(result_stdout: str, result_stderr: str, returncode: int,
                   what: str, *, host: str) -> RemoteError:
    """Map a script's exit code and `labhop:error=` line to the matching error; the
    message names `host` as the user typed it (see protocol.HOST_PLACEHOLDER)."""
    output = protocol.parse_failure(result_stdout)
    message = output.get("error").replace(protocol.HOST_PLACEHOLDER, host)
    error_type = SENTINEL_ERRORS.get(returncode, RemoteError)
    if not message:
        lines = [line for line in result_stderr.splitlines() if line.strip()]
        tail = lines[-1].strip() if lines else f"exit status {returncode}"
        message = f"{what} failed on {host}: {tail}"
    return error_type(message)


def run_script(conn: Connection, script: Script, what: str, *,
               timeout: float = 120) -> str:
    """Run `script` over `conn`; its stdout, or the error its failure means (`what` is the
    step for a message: "starting Jupyter"). The one way every step runs a script."""
    result = conn.run_script(script, timeout=timeout)
    stdout = protocol.after_marker(result.stdout, script.marker)
    if result.returncode != 0:
        raise script_failure(stdout, result.stderr, result.returncode, what,
                             host=conn.target.host)
    return stdout


def run_and_parse(conn: Connection, script: Script, what: str, *,
                  timeout: float = 120) -> protocol.ScriptOutput:
    """`run_script`, then what the script printed, read with its own keys."""
    return protocol.parse_output(run_script(conn, script, what, timeout=timeout), script.keys)


# The backends a server's state record can name, by kind; each registers itself as it is
# defined (see Backend.__init_subclass__ and backends/__init__.py).
BACKENDS: dict[str, type[Backend]] = {}


class Backend(abc.ABC):
    """Where servers run. The state directory on the remote (`list`, `find`, `logs`,
    ownership) is every backend's; launching, checking and stopping are each one's own."""

    kind: ClassVar[str] = ""
    # The file of remote/sh with its shell functions `alive_KIND`, `where_KIND` and
    # `describe_KIND` (see compose.kinds).
    entry_shell: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            BACKENDS[cls.kind] = cls

    def __init__(self, conn: Connection, options: BackendOptions | None = None) -> None:
        self.conn = conn
        self.options = options or BackendOptions()

    # -- each backend's own ---------------------------------------------------------------
    @abc.abstractmethod
    def launch(self, request: jupyter.LaunchRequest) -> Server:
        """Start the named server, or report the one already running under that name."""

    @abc.abstractmethod
    def status(self, name: str, *, with_log: bool = False) -> Status:
        """Is the named server known, alive, listening; with its log tail if asked."""

    @abc.abstractmethod
    def stop(self, name: str, *, expect_id: str = "") -> protocol.ScriptOutput:
        """Stop the named server (its kernels first) and remove its state."""

    @abc.abstractmethod
    def health(self, server: Server) -> Health:
        """How a running server is doing, checked while a labhop is attached."""

    def where(self, server: Server) -> str:
        """Where it runs, for people: "pid 48121", "job 7 on node07"."""
        return f"pid {server.pid}"

    def gpus(self) -> gpus.GpuReport | None:
        """The GPUs its servers would see, if this backend can look at them from here."""
        return None

    def forward_host(self, server: Server) -> tuple[str, str]:
        """Where a --forward's REMOTE_PORT is, as the connected host reaches it (the `-L`
        target's host), and its name for people. Here: the host itself, as `localhost`,
        so that a server bound to 127.0.0.1 or to ::1 only is reached alike."""
        del server
        return "localhost", self.conn.target.host

    def ended_message(self, server: Server, host: str) -> str:
        """What to say when an attached server ended by itself behind the tunnel (its
        state entry is still there: no `labhop stop` removed it)."""
        return (f"'{server.name}' on {host} has ended by itself (its --idle-timeout, or a "
                "crash)")

    def walltime_message(self, server: Server) -> str:
        """What to say when the backend ended an attached server at its time limit."""
        return f"'{server.name}' reached its time limit and was ended"

    def ending_soon_message(self, seconds_left: int) -> str:
        return (f"the server ends in {squeue.format_duration(seconds_left)} (its time limit); "
                "save your work")

    def time_left(self, server: Server) -> int | None:
        """Seconds until the backend ends the server (a job's walltime); None: no limit.
        Asked once at ready; the session's checks read Health.time_left_s."""
        del server
        return None

    # -- the state directory, the same for every backend ------------------------------------
    def _run(self, script: Script, what: str, *, timeout: float = 120) -> protocol.ScriptOutput:
        return run_and_parse(self.conn, script, what, timeout=timeout)

    def list(self, name: str = "", *, with_token: bool = False
             ) -> tuple[list[protocol.ServerEntry], list[str]]:
        """Running servers (all, or `name`), and the stale entries that were cleaned."""
        script = scripts.list_script(name, kinds=entry_kinds(), with_token=with_token)
        return protocol.parse_entries(run_script(self.conn, script, "listing servers"))

    def find(self, name: str = "", *, with_token: bool = False) -> protocol.ServerEntry:
        """The server called `name`, or the only one running when no name is given."""
        entries, _ = self.list(with_token=with_token)
        host = self.conn.target.host
        if name:
            for entry in entries:
                if entry.name == name:
                    return entry
            running = ", ".join(entry.name for entry in entries) or "none"
            raise ServerNotFoundError(
                f"no server named '{name}' is running on {host} (running: {running})")
        if len(entries) == 1:
            return entries[0]
        if not entries:
            raise ServerNotFoundError(
                f"no labhop server is running on {host}; start one with: "
                + self.conn.target.command())
        names = ", ".join(entry.name for entry in entries)
        raise ServerNotFoundError(
            f"{len(entries)} servers are running on {host} ({names}); name the one you mean")

    def hold_ownership(self, name: str, client: str, session: str, token: str) -> Ownership:
        """Mark `name` as attached to this labhop's `session` (to `client`), and let the
        browser token `token` open it, until the returned child ends. Returns once the
        host says so: from then on the session's earlier token (before a reconnect) is gone."""
        script = scripts.owner_script(name, client, session, token)
        child = self.conn.start_script(script, stdout=subprocess.PIPE)
        held, lines = proc.lines_until(child, f"labhop:held={session}",
                                       timeout=OWNERSHIP_TIMEOUT_S)
        if not held:
            proc.release(child, timeout=2)
            returncode = child.returncode
            stdout = protocol.after_marker("".join(f"{line}\n" for line in lines),
                                           script.marker)
            if returncode == 0 and "labhop:gone=1" in lines:
                raise ServerNotFoundError(f"'{name}' is no longer running on "
                                          f"{self.conn.target.host}")
            if returncode not in (None, 0) and protocol.parse_failure(stdout).get("error"):
                raise script_failure(stdout, "", returncode, "attaching",
                                     host=self.conn.target.host)
            raise SSHError(f"{self.conn.target.host} did not confirm this labhop's session "
                           f"within {OWNERSHIP_TIMEOUT_S:.0f} s; check the connection")
        stdout = protocol.after_marker("".join(f"{line}\n" for line in lines), script.marker)
        fields = protocol.parse_output(stdout, script.keys)
        return Ownership(child, browser_tokens=fields.get("tokens") == "1")

    def logs(self, name: str, *, lines: int) -> str | None:
        """The last `lines` of the server's log; None if there is no such server."""
        output = self._run(scripts.logs_script(name, lines=lines), "reading the log")
        if output.get("known") == "0":
            return None
        return output.log

    def follow_logs(self, name: str, *, lines: int, piped: bool = False
                    ) -> subprocess.Popen[str]:
        """`tail -f` the log until the returned child is released: to our stdout, or with
        `piped` to the child's stdout pipe, for the caller to read."""
        return self.conn.start_script(scripts.logs_script(name, lines=lines, follow=True),
                                      stdout=subprocess.PIPE if piped else None)


def server_from_entry(entry: protocol.ServerEntry) -> Server:
    return Server(name=entry.name, token=entry.token, endpoint=entry.endpoint, pid=entry.pid,
                  node=entry.node, existing=True, jobid=entry.jobid)


# A state entry older than the `backend` file is a host's server.
DEFAULT_KIND = "host"


def entry_kinds() -> dict[str, str]:
    """Every registered backend's kind and entry shell, for the scripts that read all of
    their state entries."""
    return {kind: backend.entry_shell for kind, backend in BACKENDS.items()}


def backend_kind(entry: protocol.ServerEntry) -> str:
    """Which backend runs `entry`: its state entry says (the list script reads it), then
    its launch record."""
    kind = entry.kind or str(entry.record.get("backend") or DEFAULT_KIND)
    return kind if kind in BACKENDS else DEFAULT_KIND


def backend_for_entry(conn: Connection, entry: protocol.ServerEntry,
                      options: BackendOptions | None = None) -> Backend:
    return BACKENDS[backend_kind(entry)](conn, options)


def backend_for_launch(conn: Connection, *, slurm_args: tuple[str, ...] | None,
                       options: BackendOptions | None = None) -> Backend:
    """The backend a new server is launched on: Slurm when sbatch options were given."""
    options = options or BackendOptions()
    if slurm_args is None:
        return BACKENDS[DEFAULT_KIND](conn, options)
    return BACKENDS["slurm"](conn, dataclasses.replace(options, sbatch_args=slurm_args))

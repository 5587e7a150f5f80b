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

import dataclasses
import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from labhop import gpus, remote, slurm
from labhop.connection import Connection
from labhop.errors import (
    EnvNotFoundError,
    JupyterNotFoundError,
    RemoteError,
    RootDirMissingError,
    ServerExitedError,
    ServerNotFoundError,
    SlurmError,
    SlurmPendingError,
)

_LOGGER = logging.getLogger(__name__)

_SENTINELS: dict[int, type[RemoteError]] = {
    remote.Exit.ENV_NOT_FOUND: EnvNotFoundError,
    remote.Exit.JUPYTER_NOT_FOUND: JupyterNotFoundError,
    remote.Exit.ROOT_DIR_MISSING: RootDirMissingError,
    remote.Exit.STATE_UNUSABLE: RemoteError,
    remote.Exit.SLURM_REFUSED: SlurmError,
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
    job: slurm.JobState | None = None


@dataclass(frozen=True)
class Health:
    """How a running server is doing, as its backend sees it (checked while attached)."""

    alive: bool
    # Time until the backend ends it (a job's walltime); None: no limit, or none known.
    time_left_s: int | None = None


@dataclass(frozen=True)
class BackendOptions:
    """What a launch asks of the backend beyond the server itself."""

    sbatch_args: tuple[str, ...] = ()
    queue_timeout: float = 900.0
    progress: Callable[[str], None] = lambda _message: None


def script_failure(result_stdout: str, result_stderr: str, returncode: int,
                   what: str, *, host: str) -> RemoteError:
    """Map a script's exit code and `labhop:error=` line to the matching error; the
    message names `host` as the user typed it (see remote.HOST_PLACEHOLDER)."""
    output = remote.parse_failure(result_stdout)
    message = output.get("error").replace(remote.HOST_PLACEHOLDER, host)
    error_type = _SENTINELS.get(returncode, RemoteError)
    if not message:
        lines = [line for line in result_stderr.splitlines() if line.strip()]
        tail = lines[-1].strip() if lines else f"exit status {returncode}"
        message = f"{what} failed on {host}: {tail}"
    return error_type(message)


class Backend:
    """Where servers run. The state directory on the remote (`list`, `find`, `logs`,
    ownership) is every backend's; launching, checking and stopping are each one's own."""

    kind: ClassVar[str] = ""
    # The shell functions `alive_KIND`, `where_KIND`, `describe_KIND` (see remote._kinds).
    entry_shell: ClassVar[str] = ""

    def __init__(self, conn: Connection, options: BackendOptions | None = None) -> None:
        self.conn = conn
        self.options = options or BackendOptions()

    # -- each backend's own ---------------------------------------------------------------
    def launch(self, request: remote.LaunchRequest) -> Server:
        """Start the named server, or report the one already running under that name."""
        raise NotImplementedError

    def status(self, name: str, *, with_log: bool = False) -> Status:
        raise NotImplementedError

    def stop(self, name: str, *, grace_s: float = 0.0,
             expect_id: str = "") -> remote.ScriptOutput:
        """Stop the named server (its kernels first) and remove its state."""
        raise NotImplementedError

    def health(self, server: Server) -> Health:
        raise NotImplementedError

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
        """What to say when an attached server ended behind the tunnel."""
        return (f"'{server.name}' on {host} has stopped (labhop stop, its --idle-timeout, "
                "or a crash); the last lines of its log:")

    def ending_soon_message(self, seconds_left: int) -> str:
        return (f"the server ends in {slurm.format_duration(seconds_left)} (its time limit); "
                "save your work")

    def time_limit_line(self, server: Server) -> str | None:
        """Said once at ready where the backend ends servers at a time limit; else None."""
        del server
        return None

    # -- the state directory, the same for every backend ------------------------------------
    def _run(self, script: remote.Script, what: str, *, login: bool = False,
             timeout: float = 120) -> remote.ScriptOutput:
        result = self.conn.run_script(script, login=login, timeout=timeout)
        if result.returncode != 0:
            raise script_failure(result.stdout, result.stderr, result.returncode, what,
                                 host=self.conn.target.host)
        return remote.parse_output(result.stdout, script.keys)

    def list(self, name: str = "", *, with_token: bool = False
             ) -> tuple[list[remote.ServerEntry], list[str]]:
        """Running servers (all, or `name`), and the stale entries that were cleaned."""
        result = self.conn.run_script(remote.list_script(name, kinds=entry_kinds(),
                                                         with_token=with_token))
        if result.returncode != 0:
            raise script_failure(result.stdout, result.stderr, result.returncode,
                                 "listing servers", host=self.conn.target.host)
        return remote.parse_entries(result.stdout)

    def find(self, name: str = "", *, with_token: bool = False) -> remote.ServerEntry:
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
                f"no labhop server is running on {host}; start one with: labhop {host}")
        names = ", ".join(entry.name for entry in entries)
        raise ServerNotFoundError(
            f"{len(entries)} servers are running on {host} ({names}); name the one you mean")

    def hold_ownership(self, name: str, client: str) -> subprocess.Popen[str]:
        """Mark `name` as attached to this labhop until the returned child ends."""
        return self.conn.start_script(remote.owner_script(name, client))

    def logs(self, name: str, *, lines: int) -> str | None:
        """The last `lines` of the server's log; None if there is no such server."""
        result = self.conn.run_script(remote.logs_script(name, lines=lines))
        if result.returncode != 0:
            raise script_failure(result.stdout, result.stderr, result.returncode,
                                 "reading the log", host=self.conn.target.host)
        output = remote.parse_output(result.stdout, remote.LOGS_KEYS)
        if output.get("known") == "0":
            return None
        return output.log

    def follow_logs(self, name: str, *, lines: int) -> subprocess.Popen[str]:
        """`tail -f` the log to our stdout until the returned child is released."""
        return self.conn.start_script(remote.logs_script(name, lines=lines, follow=True),
                                      stdout=None)


class HostBackend(Backend):
    """The server runs on the host we ssh into, detached from the connection."""

    kind = "host"
    entry_shell = remote.HOST_ENTRY_SHELL

    def launch(self, request: remote.LaunchRequest) -> Server:
        result = self.conn.run_script(remote.launch_script(request, kinds=entry_kinds()),
                                      login=True)
        if result.returncode != 0:
            raise script_failure(result.stdout, result.stderr, result.returncode,
                                 "starting Jupyter", host=self.conn.target.host)
        fields = remote.parse_output(result.stdout, remote.LAUNCH_KEYS)
        if not fields.get("pid") or not fields.get("endpoint"):
            raise RemoteError(
                "the remote start script printed no server details; run with --debug to see "
                "what the remote shell printed"
            )
        return Server(
            name=request.name,
            token=fields.get("token"),
            endpoint=fields.get("endpoint"),
            pid=fields.get("pid"),
            node=fields.get("node"),
            existing=fields.get("existing") == "1",
            open_path=fields.get("open_path"),
            open_kind=fields.get("open_kind"),
        )

    def status(self, name: str, *, with_log: bool = False) -> Status:
        output = self._run(remote.status_script(name, with_log=with_log), "checking the server")
        listening = output.get("listening")
        return Status(
            known=output.get("known") == "1",
            alive=output.get("alive") == "1",
            listening=None if listening == "" else listening == "1",
            log=output.log,
        )

    def stop(self, name: str, *, grace_s: float = 0.0,
             expect_id: str = "") -> remote.ScriptOutput:
        script = remote.stop_script(name, grace_s=grace_s, expect_id=expect_id)
        return self._run(script, "stopping the server", timeout=90)

    def health(self, server: Server) -> Health:
        return Health(alive=self.status(server.name).alive)

    def gpus(self) -> gpus.GpuReport:
        """What nvidia-smi on the host says now, with each GPU process's user and server."""
        # The login environment: nvidia-smi (and CUDA) often come from modules or a PATH
        # set in the login files.
        result = self.conn.run_script(gpus.query_script(), login=True, timeout=60)
        if result.returncode != 0:
            raise script_failure(result.stdout, result.stderr, result.returncode,
                                 "querying the GPUs", host=self.conn.target.host)
        return gpus.parse_report(result.stdout)


def server_from_entry(entry: remote.ServerEntry) -> Server:
    return Server(name=entry.name, token=entry.token, endpoint=entry.endpoint, pid=entry.pid,
                  node=entry.node, existing=True, jobid=entry.jobid)


class SlurmBackend(Backend):
    """The server runs as a Slurm batch job; the host we ssh into is the login node.

    The job writes where it listens (node:port) into the state directory in the shared
    home; the tunnel goes through the login node's connection to node:port.
    """

    kind = "slurm"
    entry_shell = remote.JOB_ENTRY_SHELL

    def launch(self, request: remote.LaunchRequest) -> Server:
        request = dataclasses.replace(request, transport="tcp")
        script = remote.slurm_submit_script(request, self.options.sbatch_args,
                                            kinds=entry_kinds())
        fields = self._run(script, "submitting the job", login=True)
        jobid = fields.get("jobid")
        existing = fields.get("existing") == "1"
        self.options.progress(f"{'found running' if existing else 'submitted'} job {jobid}")
        server = self._wait_for_job(request.name, jobid, fields.get("token"), existing)
        return dataclasses.replace(server, open_path=fields.get("open_path"),
                                   open_kind=fields.get("open_kind"))

    def _wait_for_job(self, name: str, jobid: str, token: str, existing: bool) -> Server:
        submitted = time.monotonic()
        deadline = submitted + self.options.queue_timeout
        shown = ""
        queue_wait_s: float | None = None
        while True:
            fields = self._job_fields(name)
            job = slurm.parse_job_line(fields.get("job"))
            if job.gone:
                raise self._ended_before_ready(name, jobid)
            if job.state == "RUNNING" and queue_wait_s is None:
                queue_wait_s = time.monotonic() - submitted
            if job.state == "RUNNING" and fields.get("endpoint"):
                node = fields.get("node")
                return Server(name=name, token=token, endpoint=fields.get("endpoint"),
                              pid=fields.get("pid"), node=node, existing=existing,
                              jobid=jobid,
                              note=f"job {jobid} runs on {node} (waited "
                                   f"{queue_wait_s or 0.0:.1f} s in the queue)")
            if job.describe() != shown:
                shown = job.describe()
                self.options.progress(f"job {jobid}: {shown}")
            if job.state == "PENDING" and time.monotonic() > deadline:
                self.stop(name)
                raise SlurmPendingError(
                    f"job {jobid} was still pending after {self.options.queue_timeout:.0f} s "
                    f"({job.reason or 'no reason given'}), so labhop cancelled it; ask for "
                    "fewer resources or raise --queue-timeout"
                )
            time.sleep(0.5)  # a fresh job usually starts within a second

    def _job_fields(self, name: str, *, with_log: bool = False) -> remote.ScriptOutput:
        return self._run(remote.slurm_status_script(name, with_log=with_log),
                         "checking the job")

    def _ended_before_ready(self, name: str, jobid: str) -> RemoteError:
        """The job is gone: say why, from the failure its script recorded (never from
        its log, which is raw text)."""
        fields = self._job_fields(name, with_log=True)
        log = fields.log
        if fields.get("job_error"):
            code = int(fields.get("job_exit")) if fields.get("job_exit").isdigit() else 0
            return _SENTINELS.get(code, RemoteError)(
                f"Slurm job {jobid}: {fields.get('job_error')}")
        return ServerExitedError(
            f"Slurm job {jobid} ended before Jupyter was ready; the last lines of its log:",
            details=log,
        )

    def status(self, name: str, *, with_log: bool = False) -> Status:
        fields = self._job_fields(name, with_log=with_log)
        job = slurm.parse_job_line(fields.get("job"))
        return Status(known=fields.get("known") == "1", alive=job.state == "RUNNING",
                      listening=None, log=fields.log, job=job)

    def stop(self, name: str, *, grace_s: float = 0.0,
             expect_id: str = "") -> remote.ScriptOutput:
        # scancel: Slurm sends SIGTERM (Jupyter's clean stop), then SIGKILL after KillWait.
        del grace_s
        script = remote.slurm_stop_script(name, expect_id=expect_id)
        return self._run(script, "cancelling the job", timeout=90)

    def health(self, server: Server) -> Health:
        job = self.status(server.name).job
        alive = job is not None and not job.gone
        return Health(alive=alive, time_left_s=job.time_left_s if job else None)

    def where(self, server: Server) -> str:
        return f"job {server.jobid} on {server.node}"

    def forward_host(self, server: Server) -> tuple[str, str]:
        # The job's node, at the address its Jupyter listens on: the one the job chose
        # because the login node can reach it (see sh/job.sh).
        address = (server.forward_target().rpartition(":")[0]
                   if server.transport == "tcp" else "") or server.node
        return address, server.node

    def ended_message(self, server: Server, host: str) -> str:
        return (f"the Slurm job running '{server.name}' has ended (walltime reached, or "
                "cancelled); the last lines of its log:")

    def ending_soon_message(self, seconds_left: int) -> str:
        return (f"the Slurm job ends in {slurm.format_duration(seconds_left)} (walltime); "
                "save your work")

    def time_limit_line(self, server: Server) -> str | None:
        seconds_left = self.health(server).time_left_s
        if seconds_left is None:
            return f"{self.where(server)}: no walltime limit"
        return (f"{self.where(server)}: {slurm.format_duration(seconds_left)} of walltime "
                "left; labhop warns 10 minutes before the end")


# The backends a server's state record can name; the record's "backend" picks one.
BACKENDS: dict[str, type[Backend]] = {
    HostBackend.kind: HostBackend,
    SlurmBackend.kind: SlurmBackend,
}


def entry_kinds() -> dict[str, str]:
    """Every registered backend's kind and entry shell, for the scripts that read all of
    their state entries."""
    return {kind: backend.entry_shell for kind, backend in BACKENDS.items()}


def backend_kind(entry: remote.ServerEntry) -> str:
    """Which backend runs `entry`: its state entry says (the list script reads it), then
    its launch record."""
    kind = entry.kind or str(entry.record.get("backend") or "host")
    return kind if kind in BACKENDS else HostBackend.kind


def backend_for_entry(conn: Connection, entry: remote.ServerEntry,
                      options: BackendOptions | None = None) -> Backend:
    return BACKENDS[backend_kind(entry)](conn, options)


def backend_for_launch(conn: Connection, *, slurm_args: tuple[str, ...] | None,
                       options: BackendOptions | None = None) -> Backend:
    """The backend a new server is launched on: Slurm when sbatch options were given."""
    options = options or BackendOptions()
    if slurm_args is None:
        return HostBackend(conn, options)
    return SlurmBackend(conn, dataclasses.replace(options, sbatch_args=slurm_args))

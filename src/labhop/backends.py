"""Where a server runs. Today: the host itself. A Slurm job (or PBS, Kubernetes) plugs in
behind the same methods, so the supervisor in `session` never changes.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from labhop import remote, slurm
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


def script_failure(result_stdout: str, result_stderr: str, returncode: int,
                   what: str) -> RemoteError:
    """Map a script's exit code and `labhop:error=` line to the matching error."""
    output = remote.parse_output(result_stdout)
    message = output.get("error")
    error_type = _SENTINELS.get(returncode, RemoteError)
    if not message:
        lines = [line for line in result_stderr.splitlines() if line.strip()]
        tail = lines[-1].strip() if lines else f"exit status {returncode}"
        message = f"{what} failed on the remote: {tail}"
    return error_type(message)


class HostBackend:
    """The server runs on the host we ssh into, detached from the connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def launch(self, request: remote.LaunchRequest) -> Server:
        result = self.conn.run_script(remote.launch_script(request), login=True)
        if result.returncode != 0:
            raise script_failure(result.stdout, result.stderr, result.returncode,
                                 "starting Jupyter")
        fields = remote.parse_output(result.stdout)
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
        )

    def status(self, name: str, *, with_log: bool = False) -> Status:
        result = self.conn.run_script(remote.status_script(name, with_log=with_log))
        if result.returncode != 0:
            raise script_failure(result.stdout, result.stderr, result.returncode,
                                 "checking the server")
        output = remote.parse_output(result.stdout)
        listening = output.get("listening")
        return Status(
            known=output.get("known") == "1",
            alive=output.get("alive") == "1",
            listening=None if listening == "" else listening == "1",
            log=output.log,
        )

    def stop(self, name: str, *, grace_s: float = 5.0, expect_id: str = "") -> remote.ScriptOutput:
        script = remote.stop_script(name, grace_s=grace_s, expect_id=expect_id)
        result = self.conn.run_script(script, timeout=90)
        if result.returncode != 0:
            raise script_failure(result.stdout, result.stderr, result.returncode,
                                 "stopping the server")
        return remote.parse_output(result.stdout)

    def list(self, name: str = "", *, with_token: bool = False
             ) -> tuple[list[remote.ServerEntry], list[str]]:
        """Running servers (all, or `name`), and the stale entries that were cleaned."""
        result = self.conn.run_script(remote.list_script(name, with_token=with_token))
        if result.returncode != 0:
            raise script_failure(result.stdout, result.stderr, result.returncode,
                                 "listing servers")
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
                                 "reading the log")
        if remote.parse_output(result.stdout).get("known") == "0":
            return None
        return "\n".join(line for line in result.stdout.splitlines()
                         if not line.startswith("labhop:"))

    def follow_logs(self, name: str, *, lines: int) -> subprocess.Popen[str]:
        """`tail -f` the log to our stdout until the returned child is released."""
        return self.conn.start_script(remote.logs_script(name, lines=lines, follow=True),
                                      stdout=None)


def server_from_entry(entry: remote.ServerEntry) -> Server:
    return Server(name=entry.name, token=entry.token, endpoint=entry.endpoint, pid=entry.pid,
                  node=entry.node, existing=True)


class SlurmBackend(HostBackend):
    """The server runs as a Slurm batch job; the host we ssh into is the login node.

    The job writes where it listens (node:port) into the state directory in the shared
    home; the tunnel goes through the login node's master connection to node:port.
    """

    def __init__(self, conn: Connection, sbatch_args: tuple[str, ...], *,
                 queue_timeout: float, progress: Callable[[str], None]) -> None:
        super().__init__(conn)
        self.sbatch_args = sbatch_args
        self.queue_timeout = queue_timeout
        self.progress = progress
        self.queue_wait_s: float | None = None
        self.jobid = ""

    def launch(self, request: remote.LaunchRequest) -> Server:
        request = dataclasses.replace(request, transport="tcp")
        script = remote.slurm_submit_script(request, self.sbatch_args)
        result = self.conn.run_script(script, login=True)
        if result.returncode != 0:
            raise script_failure(result.stdout, result.stderr, result.returncode,
                                 "submitting the job")
        fields = remote.parse_output(result.stdout)
        self.jobid = fields.get("jobid")
        existing = fields.get("existing") == "1"
        self.progress(f"{'found running' if existing else 'submitted'} job {self.jobid}")
        return self._wait_for_job(request.name, fields.get("token"), existing)

    def _wait_for_job(self, name: str, token: str, existing: bool) -> Server:
        submitted = time.monotonic()
        deadline = submitted + self.queue_timeout
        shown = ""
        while True:
            fields = self._job_fields(name)
            job = slurm.parse_job_line(fields.get("job"))
            if job.gone:
                raise self._ended_before_ready(name)
            if job.state == "RUNNING" and self.queue_wait_s is None:
                self.queue_wait_s = time.monotonic() - submitted
            if job.state == "RUNNING" and fields.get("endpoint"):
                return Server(name=name, token=token, endpoint=fields.get("endpoint"),
                              pid=fields.get("pid"), node=fields.get("node"),
                              existing=existing)
            if job.describe() != shown:
                shown = job.describe()
                self.progress(f"job {self.jobid}: {shown}")
            if job.state == "PENDING" and time.monotonic() > deadline:
                self.stop(name, grace_s=0)
                raise SlurmPendingError(
                    f"job {self.jobid} was still pending after {self.queue_timeout:.0f} s "
                    f"({job.reason or 'no reason given'}), so labhop cancelled it; ask for "
                    "fewer resources or raise --queue-timeout"
                )
            time.sleep(0.5)  # a fresh job usually starts within a second

    def _job_fields(self, name: str, *, with_log: bool = False) -> remote.ScriptOutput:
        result = self.conn.run_script(remote.slurm_status_script(name, with_log=with_log))
        if result.returncode != 0:
            raise script_failure(result.stdout, result.stderr, result.returncode,
                                 "checking the job")
        return remote.parse_output(result.stdout)

    def _ended_before_ready(self, name: str) -> RemoteError:
        """The job is gone: say why, from the `labhop:error=` line its script logged."""
        log = self._job_fields(name, with_log=True).log
        logged = remote.parse_output(log)
        if logged.get("error"):
            code = int(logged.get("exit") or 0)
            return _SENTINELS.get(code, RemoteError)(
                f"Slurm job {self.jobid}: {logged.get('error')}")
        return ServerExitedError(
            f"Slurm job {self.jobid} ended before Jupyter was ready; the last lines of its log:",
            details=log,
        )

    def status(self, name: str, *, with_log: bool = False) -> Status:
        fields = self._job_fields(name, with_log=with_log)
        job = slurm.parse_job_line(fields.get("job"))
        return Status(known=fields.get("known") == "1", alive=job.state == "RUNNING",
                      listening=None, log=fields.log, job=job)

"""The server runs as a Slurm batch job; the host we ssh into is the login node."""

from __future__ import annotations

import dataclasses
import time

from labhop.backends.base import SENTINEL_ERRORS, Backend, Health, Server, Status, entry_kinds
from labhop.errors import RemoteError, ServerExitedError, SlurmPendingError, with_log
from labhop.remote import jupyter, protocol, scripts, squeue


@dataclasses.dataclass(frozen=True)
class Queued:
    """A job submitted (or found) and not waited for (--detach --no-wait)."""

    jobid: str
    existing: bool  # the job of that name was live already; none was submitted
    job: squeue.JobState


class SlurmBackend(Backend):
    """The server runs as a Slurm batch job; the host we ssh into is the login node.

    The job writes where it listens (node:port) into the state directory in the shared
    home; the tunnel goes through the login node's connection to node:port.
    """

    kind = "slurm"
    entry_shell = "job_entry.sh"

    def launch(self, request: jupyter.LaunchRequest) -> Server:
        fields = self._submit(request)
        jobid = fields.get("jobid")
        existing = fields.get("existing") == "1"
        self.options.progress(f"{'found running' if existing else 'submitted'} job {jobid}")
        server = self._wait_for_job(request.name, jobid, fields.get("token"), existing)
        return dataclasses.replace(server, open_path=fields.get("open_path"),
                                   open_kind=fields.get("open_kind"))

    def queue(self, request: jupyter.LaunchRequest) -> Queued:
        """Submit the job (or find the live one of that name) and return at once, without
        waiting for it to run (--detach --no-wait)."""
        fields = self._submit(request)
        jobid = fields.get("jobid")
        job = squeue.parse_job_line(self._job_fields(request.name).get("job"))
        if job.gone:  # it failed at once (its --env, say): no job to attach to later
            raise self._ended_before_ready(request.name, jobid)
        return Queued(jobid=jobid, existing=fields.get("existing") == "1", job=job)

    def wait_until_running(self, server: Server) -> Server:
        """A job found queued (attach after --no-wait): wait until it serves. A job still
        pending at the queue timeout is left queued: it is not this labhop's to cancel."""
        found = self._wait_for_job(server.name, server.jobid, server.token, True,
                                   cancel_pending=False)
        return dataclasses.replace(found, note="")

    def _submit(self, request: jupyter.LaunchRequest) -> protocol.ScriptOutput:
        request = dataclasses.replace(request, transport="tcp")
        script = scripts.slurm_submit_script(request, self.options.sbatch_args,
                                            kinds=entry_kinds())
        return self._run(script, "submitting the job")

    def _wait_for_job(self, name: str, jobid: str, token: str, existing: bool, *,
                      cancel_pending: bool = True) -> Server:
        submitted = time.monotonic()
        deadline = submitted + self.options.queue_timeout
        shown = ""
        queue_wait_s: float | None = None
        while True:
            fields = self._job_fields(name)
            job = squeue.parse_job_line(fields.get("job"))
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
                if job.state == "PENDING":
                    # A change of reason or estimate: the start time is Slurm's, as it
                    # prints it (the cluster's local time).
                    self.options.event("queued", jobid=jobid, reason=job.reason or "None",
                                       why=job.reason_words, start=job.start or None)
            if job.state == "PENDING" and time.monotonic() > deadline:
                raise self._still_pending(name, jobid, job, cancel=cancel_pending)
            time.sleep(0.5)  # a fresh job usually starts within a second

    def _still_pending(self, name: str, jobid: str, job: squeue.JobState, *,
                       cancel: bool) -> SlurmPendingError:
        waited = (f"job {jobid} was still pending after {self.options.queue_timeout:.0f} s "
                  f"({job.reason_words})")
        if not cancel:
            stop = self.conn.target.command("stop", after=(name,))
            return SlurmPendingError(f"{waited}; it stays queued: attach again later, or "
                                     f"cancel it with: {stop}")
        self.stop(name)
        return SlurmPendingError(f"{waited}, so labhop cancelled it; ask for fewer resources "
                                 "or raise --queue-timeout")

    def _job_fields(self, name: str, *, with_log: bool = False) -> protocol.ScriptOutput:
        return self._run(scripts.slurm_status_script(name, with_log=with_log),
                         "checking the job")

    def _ended_before_ready(self, name: str, jobid: str) -> RemoteError:
        """The job is gone: say why, from the failure its script recorded (never from
        its log, which is raw text)."""
        fields = self._job_fields(name, with_log=True)
        log = fields.log
        if fields.get("job_error"):
            code = int(fields.get("job_exit")) if fields.get("job_exit").isdigit() else 0
            return SENTINEL_ERRORS.get(code, RemoteError)(
                f"Slurm job {jobid}: {fields.get('job_error')}")
        return ServerExitedError(**with_log(
            f"Slurm job {jobid} ended before Jupyter was ready", log))

    def status(self, name: str, *, with_log: bool = False) -> Status:
        fields = self._job_fields(name, with_log=with_log)
        job = squeue.parse_job_line(fields.get("job"))
        return Status(known=fields.get("known") == "1", alive=job.state == "RUNNING",
                      listening=None, log=fields.log, job=job,
                      ended_as=fields.get("job_end").strip())

    def stop(self, name: str, *, expect_id: str = "") -> protocol.ScriptOutput:
        # scancel: Slurm sends SIGTERM (Jupyter's clean stop), then SIGKILL after KillWait.
        script = scripts.slurm_stop_script(name, expect_id=expect_id)
        return self._run(script, "cancelling the job", timeout=90)

    def health(self, server: Server) -> Health:
        status = self.status(server.name)
        job = status.job
        alive = job is not None and not job.gone
        return Health(alive=alive, time_left_s=job.time_left_s if job else None,
                      known=status.known, ended_as=status.ended_as)

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
                "cancelled)")

    def ending_soon_message(self, seconds_left: int) -> str:
        return (f"the Slurm job ends in {squeue.format_duration(seconds_left)} (walltime); "
                "save your work")

    def walltime_message(self, server: Server) -> str:
        return (f"Slurm job {server.jobid} running '{server.name}' reached its walltime and "
                "Slurm ended it; ask for more time next start (-t in --slurm)")

    def time_left(self, server: Server) -> int | None:
        return self.health(server).time_left_s

"""Reading what Slurm says about a job: pure functions, tested on text."""

from __future__ import annotations

import re
from dataclasses import dataclass

# States in which a job still holds (or will hold) its server.
LIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED",
               "COMPLETING"}


# Slurm's pending reasons (squeue %r) in words; any other is shown as Slurm spells it.
REASONS = {
    "None": "waiting to be scheduled",
    "Resources": "waiting for resources (the nodes, GPUs or memory it asks for are in use)",
    "Priority": "waiting for a higher-priority job",
    "Dependency": "waiting for a job it depends on",
    "BeginTime": "waiting for its begin time",
    "JobHeldUser": "held by you (release it with scontrol release)",
    "JobHeldAdmin": "held by an administrator",
    "ReqNodeNotAvail": "a node it needs is not available (down, drained or reserved)",
    "PartitionTimeLimit": "its time limit is above the partition's (ask for less with -t)",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows",
    "PartitionDown": "its partition is down",
    "Reservation": "waiting for its reservation",
    "QOSMaxJobsPerUserLimit": "you already run as many jobs as your QOS allows",
    "AssocMaxJobsLimit": "you already run as many jobs as your account allows",
    "AssocGrpGRES": "your account's GPUs are all in use",
    "QOSGrpGRES": "your QOS's GPUs are all in use",
    "JobArrayTaskLimit": "its array runs as many tasks as it may",
}


@dataclass(frozen=True)
class JobState:
    """One `squeue -o '%T|%r|%N|%L|%S'` line; empty state means the job has left the queue."""

    state: str
    reason: str
    node: str
    time_left_s: int | None  # None: unlimited or not known
    # Pending: Slurm's estimate of its start (squeue --start), as Slurm prints it; "" if none.
    start: str = ""

    @property
    def gone(self) -> bool:
        return self.state not in LIVE_STATES

    @property
    def reason_words(self) -> str:
        """Why a pending job waits, in words: 'waiting for resources (...)'."""
        return REASONS.get(self.reason or "None", f"waiting ({self.reason})")

    def describe(self) -> str:
        if self.state == "PENDING":
            words = f"queued, {self.reason_words}"
            return f"{words}; Slurm expects it to start at {self.start}" if self.start \
                else words
        if self.state == "RUNNING" and self.node:
            return f"RUNNING on {self.node}"
        return self.state or "ended"


def parse_job_line(line: str) -> JobState:
    parts = [*line.strip().split("|"), "", "", "", "", ""][:5]
    state, reason, node, left, start = (part.strip() for part in parts)
    return JobState(state=state, reason=reason, node=node, time_left_s=parse_time_left(left),
                    start=_estimate(start) if state == "PENDING" else "")


def _estimate(text: str) -> str:
    """A start time Slurm has computed ('2026-12-08T03:10:00'); '' for N/A, Unknown, ..."""
    return text.replace("T", " ") if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?",
                                                 text) else ""


_TIME = re.compile(r"(?:(?P<days>\d+)-)?(?:(?P<h>\d+):)?(?P<m>\d+):(?P<s>\d+)")


def parse_time_left(text: str) -> int | None:
    """Slurm durations: `MM:SS`, `HH:MM:SS`, `D-HH:MM:SS`, `D-HH`; UNLIMITED etc. -> None."""
    text = text.strip()
    match = _TIME.fullmatch(text)
    if match:
        days = int(match["days"] or 0)
        return ((days * 24 + int(match["h"] or 0)) * 60 + int(match["m"])) * 60 + int(match["s"])
    day_hours = re.fullmatch(r"(\d+)-(\d+)", text)
    if day_hours:
        return (int(day_hours[1]) * 24 + int(day_hours[2])) * 3600
    return None


def format_duration(seconds: int) -> str:
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes = rest // 60
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"

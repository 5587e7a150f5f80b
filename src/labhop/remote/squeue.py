"""Reading what Slurm says about a job: pure functions, tested on text."""

from __future__ import annotations

import re
from dataclasses import dataclass

# States in which a job still holds (or will hold) its server.
LIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED",
               "COMPLETING"}


@dataclass(frozen=True)
class JobState:
    """One `squeue -o '%T|%r|%N|%L'` line; empty state means the job has left the queue."""

    state: str
    reason: str
    node: str
    time_left_s: int | None  # None: unlimited or not known

    @property
    def gone(self) -> bool:
        return self.state not in LIVE_STATES

    def describe(self) -> str:
        if self.state == "PENDING":
            return f"PENDING ({self.reason})" if self.reason and self.reason != "None" \
                else "PENDING"
        if self.state == "RUNNING" and self.node:
            return f"RUNNING on {self.node}"
        return self.state or "ended"


def parse_job_line(line: str) -> JobState:
    parts = [*line.strip().split("|"), "", "", "", ""][:4]
    state, reason, node, left = (part.strip() for part in parts)
    return JobState(state=state, reason=reason, node=node, time_left_s=parse_time_left(left))


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

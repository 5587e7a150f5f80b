"""A job's walltime, visible: when it ends, as a clock time, and the warnings before that.

Pure: the time left comes from the backend (Slurm's %L), the clock from the caller.

    warnings = Warnings((600, 120))
    warnings.due(300)   # 600: the first check finds 5m left, under the 10-minute mark
    warnings.due(250)   # None: said already
    warnings.due(110)   # 120
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from labhop.remote.squeue import format_duration

DEFAULT_WARNINGS_S = (600, 120)


@dataclass
class Warnings:
    """Which of the warnings (seconds before the end) are due; each is said once.

    A check that finds the job past several marks at once says only the nearest one: a
    job that starts with 5 minutes left gets the 10-minute warning at once and still the
    2-minute one later, but one with 1 minute left only the 2-minute one.
    """

    marks_s: tuple[int, ...] = DEFAULT_WARNINGS_S
    said: set[int] = field(default_factory=set)

    def due(self, left_s: int | None) -> int | None:
        if left_s is None:
            return None
        crossed = [mark for mark in self.marks_s if left_s <= mark and mark not in self.said]
        if not crossed:
            return None
        nearest = min(crossed)
        self.said.update(mark for mark in self.marks_s if mark >= nearest)
        return nearest


def end_time(left_s: int, now: datetime) -> datetime:
    """The end as a local clock time, from the time left (never from the cluster's clock,
    whose zone and drift are not ours)."""
    return (now + timedelta(seconds=left_s)).replace(microsecond=0)


def iso(moment: datetime) -> str:
    """'2026-12-08T03:30:00+00:00': absolute, with the offset, for --json readers."""
    return moment.isoformat()


def clock(moment: datetime, now: datetime) -> str:
    """'03:30', or 'Tue 08 Dec 03:30' when the end is not today."""
    if moment.date() == now.date():
        return moment.strftime("%H:%M")
    return moment.strftime("%a %d %b %H:%M")


def marks_text(marks_s: tuple[int, ...]) -> str:
    """'10m and 2m', '10m', or '' for none."""
    spelled = [format_duration(mark) for mark in sorted(marks_s, reverse=True)]
    if len(spelled) <= 1:
        return "".join(spelled)
    return f"{', '.join(spelled[:-1])} and {spelled[-1]}"


def limit_line(where: str, left_s: int, ends: datetime, now: datetime,
               marks_s: tuple[int, ...]) -> str:
    """'job 12 on gpu-7: 3h59m of walltime left, until 03:30; labhop warns 10m and 2m
    before the end'."""
    line = f"{where}: {format_duration(left_s)} of walltime left, until {clock(ends, now)}"
    if marks_s:
        return f"{line}; labhop warns {marks_text(marks_s)} before the end"
    return f"{line}; no warnings before the end (walltime_warnings is empty)"

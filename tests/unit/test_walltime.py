"""A job's walltime: which warnings are due, and how the end is said."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from labhop.config import options
from labhop.config.options import Given
from labhop.config.profiles import Profiles
from labhop.errors import CommandLineError
from labhop.session import walltime
from labhop.session.walltime import Warnings

NOW = datetime(2026, 12, 8, 1, 0, 0, tzinfo=timezone(timedelta(hours=1)))


def test_each_warning_is_said_once_as_the_end_comes_near() -> None:
    warnings = Warnings((600, 120))
    assert [warnings.due(left) for left in (3600, 900, 599, 400, 121, 119, 30)] == [
        None, None, 600, None, None, 120, None]


def test_a_job_that_starts_with_five_minutes_left_still_gets_the_two_minute_warning() -> None:
    warnings = Warnings((600, 120))
    assert warnings.due(300) == 600
    assert warnings.due(200) is None
    assert warnings.due(115) == 120


def test_a_check_past_both_marks_says_only_the_nearest() -> None:
    warnings = Warnings((600, 120))
    assert warnings.due(60) == 120
    assert warnings.due(30) is None


def test_no_limit_and_no_marks_warn_nothing() -> None:
    assert Warnings((600, 120)).due(None) is None
    assert Warnings(()).due(5) is None


def test_the_end_is_an_absolute_time_with_its_offset() -> None:
    ends = walltime.end_time(3 * 3600 + 59 * 60 + 30, NOW)
    assert walltime.iso(ends) == "2026-12-08T04:59:30+01:00"
    assert walltime.clock(ends, NOW) == "04:59"
    assert walltime.clock(walltime.end_time(86400, NOW), NOW) == "Wed 09 Dec 01:00"


def test_the_ready_line_names_the_time_left_the_end_and_the_warnings() -> None:
    ends = walltime.end_time(239 * 60, NOW)
    assert walltime.limit_line("job 12 on gpu-7", 239 * 60, ends, NOW, (600, 120)) == (
        "job 12 on gpu-7: 3h59m of walltime left, until 04:59; labhop warns 10m and 2m "
        "before the end")
    assert walltime.limit_line("job 12 on gpu-7", 60, walltime.end_time(60, NOW), NOW, ()) \
        .endswith("until 01:01; no warnings before the end (walltime_warnings is empty)")


def _resolve(value: str) -> tuple[int, ...]:
    resolved = options.resolve("h", {"walltime_warnings": Given(value, "--walltime-warnings")},
                               config=Profiles(Path("/nonexistent/config.toml")))
    return resolved.walltime_warnings


def test_walltime_warnings_are_durations_largest_first() -> None:
    no_file = Profiles(Path("/nonexistent/config.toml"))
    assert options.resolve("h", {}, config=no_file).walltime_warnings == (600, 120)
    assert _resolve("2m, 30m,10m,2m") == (1800, 600, 120)
    assert _resolve("") == ()


@pytest.mark.parametrize("bad", ["soon", "10m,0", "-5m"])
def test_a_bad_walltime_warning_says_what_is_allowed(bad: str) -> None:
    with pytest.raises(CommandLineError, match=r"bad --walltime-warnings .*: use durations "
                                                r"before the end, comma-separated, like 10m,2m"):
        _resolve(bad)

"""Parsing what squeue prints about a job."""

from __future__ import annotations

import pytest

from labhop.remote.squeue import format_duration, parse_job_line, parse_time_left


@pytest.mark.parametrize(("text", "seconds"), [
    ("59:58", 3598), ("3:59:58", 14398), ("1-02:03:04", 93784), ("2-05", 190800),
    ("UNLIMITED", None), ("NOT_SET", None), ("INVALID", None), ("", None),
])
def test_time_left(text: str, seconds: int | None) -> None:
    assert parse_time_left(text) == seconds


def test_pending_with_its_reason() -> None:
    job = parse_job_line("PENDING|Resources||4:00:00|N/A")
    assert job.describe() == ("queued, waiting for resources (the nodes, GPUs or memory it "
                              "asks for are in use)")
    assert not job.gone
    assert job.time_left_s == 14400


def test_pending_with_slurms_estimated_start() -> None:
    job = parse_job_line("PENDING|Priority||1:00:00|2026-12-08T03:10:00")
    assert job.start == "2026-12-08 03:10:00"
    assert job.describe() == ("queued, waiting for a higher-priority job; Slurm expects it "
                              "to start at 2026-12-08 03:10:00")


@pytest.mark.parametrize(("reason", "words"), [
    ("None", "waiting to be scheduled"),
    ("", "waiting to be scheduled"),
    ("BeginTime", "waiting for its begin time"),
    ("SomethingNew", "waiting (SomethingNew)"),
])
def test_reasons_in_words(reason: str, words: str) -> None:
    assert parse_job_line(f"PENDING|{reason}||5:00|Unknown").reason_words == words


def test_a_running_jobs_start_is_no_estimate() -> None:
    assert parse_job_line("RUNNING|None|n1|5:00|2026-12-08T01:00:00").start == ""


def test_running_on_a_node() -> None:
    job = parse_job_line("RUNNING|None|gpu-node-07|3:59:58\n")
    assert (job.state, job.node, job.time_left_s) == ("RUNNING", "gpu-node-07", 14398)
    assert job.describe() == "RUNNING on gpu-node-07"


def test_an_empty_line_means_the_job_left_the_queue() -> None:
    assert parse_job_line("").gone


def test_format_duration() -> None:
    assert format_duration(540) == "9m"
    assert format_duration(14398) == "3h59m"

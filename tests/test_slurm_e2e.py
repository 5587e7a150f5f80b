"""`labhop HOST --slurm ...`: Jupyter as a batch job on the one-node test cluster, reached
through the loopback sshd acting as the login node (scripts/slurm-setup)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from datetime import datetime, timedelta

import pytest

from tests import jupyter_api
from tests.labhop_cli import LabhopProcess, run_labhop
from tests.test_start_e2e import URL, start, wait_until_no_user_processes
from tests.testbed import USER, SlurmCluster

pytestmark = pytest.mark.e2e


def squeue() -> str:
    return subprocess.run(["squeue", "-h", "-u", USER, "-o", "%i %T"], capture_output=True,
                          text=True, check=False, timeout=30).stdout.strip()


def test_job_runs_code_and_ctrl_c_cancels_it(slurm: SlurmCluster) -> None:
    sshd = slurm.login
    with start(sshd, "gpubox", "--name", "proj", "--slurm", "-p gpu -t 00:30:00",
               "--env", "venv:~/jvenv") as run:
        url = run.wait_for(URL, timeout=120)
        job = run.wait_for(r"job (?P<id>\d+) runs on (?P<node>\S+) \(waited", timeout=5)
        assert job["node"] == slurm.node
        run.wait_for(r"of walltime left", timeout=30)
        output, _ = jupyter_api.execute(
            f"http://127.0.0.1:{url['port']}", url["token"],
            "import os; print(os.environ['SLURM_JOB_ID'], os.environ['SLURM_JOB_PARTITION'])")
        assert output.split() == [job["id"], "gpu"]

        listing = run_labhop("ls", "-F", str(sshd.config), "gpubox", "--json")
        [entry] = json.loads(listing.stdout)
        assert entry["jobid"] == job["id"]
        assert entry["job_state"] == "RUNNING"

        run.interrupt()
        assert run.wait(60) == 0, run.output
    assert squeue() == ""
    assert wait_until_no_user_processes() == []


def test_a_bad_partition_gives_slurms_reason_in_one_line(slurm: SlurmCluster) -> None:
    result = run_labhop("-F", str(slurm.login.config), "gpubox", "--no-browser",
                        "--slurm", "-p nope", timeout=90)
    assert result.rc == 30, result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("labhop: error")]
    assert "Slurm refused the job" in error and "invalid partition" in error
    assert squeue() == ""


def test_a_job_pending_past_the_deadline_is_cancelled(slurm: SlurmCluster) -> None:
    result = run_labhop("-F", str(slurm.login.config), "gpubox", "--no-browser",
                        "--slurm", "-p gpu --begin=now+1hour", "--queue-timeout", "5s",
                        timeout=90)
    assert result.rc == 31, result.stderr
    assert "was still pending after 5 s" in result.stderr
    assert "labhop cancelled it" in result.stderr
    # Why it waited, in words, while it waited and in the last line.
    assert ": queued, waiting for its begin time" in result.stderr
    assert "pending after 5 s (waiting for its begin time)" in result.stderr
    assert squeue() == ""


def test_a_job_near_its_walltime_is_announced_and_warned(slurm: SlurmCluster) -> None:
    with start(slurm.login, "gpubox", "--name", "proj", "--slurm", "-p gpu -t 00:09:00") as run:
        run.wait_for(URL, timeout=120)
        run.wait_for(r"job \d+ on \S+: 8m of walltime left", timeout=30)
        run.wait_for(r"the Slurm job ends in 8m \(walltime\); save your work", timeout=30)
        run.interrupt()
        assert run.wait(60) == 0, run.output
    assert squeue() == ""


def json_events(run: LabhopProcess, kind: str) -> list[dict[str, object]]:
    """The --json events of `kind` labhop printed so far."""
    found = []
    for line in run.output.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == kind:
                found.append(event)
    return found


def test_a_job_at_its_walltime_is_warned_then_ends_labhop_with_its_own_status(
        slurm: SlurmCluster) -> None:
    """A one-minute job: ready carries its end, the 2-minute warning comes at once (the
    10-minute one is past already), and the limit ends labhop with status 32."""
    started = datetime.now().astimezone()
    with start(slurm.login, "gpubox", "--name", "wall", "--json", "--slurm",
               "-p gpu -t 1") as run:
        run.wait_for(r'"event": "ready"', timeout=120)
        [ready] = json_events(run, "ready")
        assert isinstance(ready["time_left_s"], int) and 0 < ready["time_left_s"] <= 60
        ends = datetime.fromisoformat(str(ready["ends_at"]))
        assert ends.tzinfo is not None
        assert started < ends <= started + timedelta(seconds=90), (started, ends)
        run.wait_for(r'"event": "walltime"', timeout=30)
        assert [event["warning_s"] for event in json_events(run, "walltime")] == [120]
        assert "the Slurm job ends in" in run.output
        assert run.wait(150) == 32, run.output
    [error] = json_events(run, "error")
    assert error["code"] == 32
    assert "reached its walltime and Slurm ended it" in str(error["message"])
    assert squeue() == ""


def test_attach_to_a_kept_job_and_stop_it(slurm: SlurmCluster) -> None:
    sshd = slurm.login
    with start(sshd, "gpubox", "--name", "proj", "--keep", "--slurm", "-p gpu") as run:
        url = run.wait_for(URL, timeout=120)
        run.interrupt()
        assert run.wait(60) == 0, run.output
    assert "RUNNING" in squeue()
    with LabhopProcess.start("attach", "-F", str(sshd.config), "gpubox", "proj",
                             "--no-browser") as attached:
        again = attached.wait_for(URL, timeout=60)
        assert again["token"] != url["token"]  # this labhop's own (see test_neighbour_e2e)
        # Recognised as a job: on a real cluster its PID lives on another node, so only
        # Slurm can say whether it is alive (here login and compute node are one machine).
        assert re.search(rf"attaching to 'proj' on gpubox \(job \d+ on {slurm.node}\)",
                         attached.output), attached.output
        output, _ = jupyter_api.execute(f"http://127.0.0.1:{again['port']}", again["token"],
                                        "print(6 * 7)")
        assert output.strip() == "42"
        attached.interrupt()
        assert attached.wait(60) == 0, attached.output
    assert "RUNNING" in squeue()
    # The same name started on the login node itself must not take the job's state.
    clash = run_labhop("-F", str(sshd.config), "gpubox", "--name", "proj", "--no-browser")
    assert clash.rc == 26, clash.stderr
    assert "'proj' already runs as Slurm job" in clash.stderr
    assert "RUNNING" in squeue()
    stopped = run_labhop("stop", "-F", str(sshd.config), "gpubox", "proj")
    assert stopped.rc == 0, stopped.stderr
    assert squeue() == ""


def test_detach_returns_once_the_job_runs_and_answers(slurm: SlurmCluster) -> None:
    sshd = slurm.login
    result = run_labhop("-F", str(sshd.config), "gpubox", "--name", "dj", "--slurm", "-p gpu",
                        "--detach", timeout=180)
    assert result.rc == 0, result.stderr
    job = re.search(r"is running on gpubox \(server 'dj', job (\d+) on (\S+)\)", result.stderr)
    assert job is not None, result.stderr
    assert squeue() == f"{job[1]} RUNNING"
    hint = result.stderr.split("reattach with: ", 1)[1].splitlines()[0]
    assert shlex.split(hint) == ["labhop", "attach", "-F", str(sshd.config), "gpubox", "dj"]
    # It answered before labhop returned: an attach reaches it at once and runs code there.
    with LabhopProcess.start(*shlex.split(hint)[1:], "--no-browser") as attached:
        url = attached.wait_for(URL, timeout=30)
        output, _ = jupyter_api.execute(f"http://127.0.0.1:{url['port']}", url["token"],
                                        "print(6 * 7)")
        assert output.strip() == "42"
        attached.interrupt()
        assert attached.wait(60) == 0, attached.output
    assert run_labhop("stop", "-F", str(sshd.config), "gpubox", "dj").rc == 0
    assert squeue() == ""


def test_detach_no_wait_returns_once_queued_and_attach_waits_for_the_job(
        slurm: SlurmCluster) -> None:
    sshd = slurm.login
    # --begin holds the job in the queue for a while: labhop must not wait for it.
    result = run_labhop("-F", str(sshd.config), "gpubox", "--name", "nw", "--slurm",
                        "-p gpu --begin=now+10", "--detach", "--no-wait", timeout=60)
    assert result.rc == 0, result.stderr
    # Why it waits, in words (its begin time, or resources once that has passed).
    job = re.search(r"submitted Slurm job (\d+) for 'nw' on gpubox: queued, waiting ",
                    result.stderr)
    assert job is not None, result.stderr
    jobid = job[1]
    assert squeue() == f"{jobid} PENDING"
    hint = result.stderr.split("attach with: ", 1)[1].splitlines()[0]
    assert shlex.split(hint) == ["labhop", "attach", "-F", str(sshd.config), "gpubox", "nw"]
    # The printed command works while the job still waits: attach waits until it runs.
    with LabhopProcess.start(*shlex.split(hint)[1:], "--no-browser") as attached:
        url = attached.wait_for(URL, timeout=120)
        assert f"job {jobid}: queued, waiting " in attached.output
        output, _ = jupyter_api.execute(f"http://127.0.0.1:{url['port']}", url["token"],
                                        "print(6 * 7)")
        assert output.strip() == "42"
        attached.interrupt()
        assert attached.wait(60) == 0, attached.output
    assert squeue() == f"{jobid} RUNNING"
    # For a script: one event with the job id and the attach command (no token, no URL),
    # then the end; the job of that name is found, not submitted again.
    as_json = run_labhop("-F", str(sshd.config), "gpubox", "--name", "nw", "--slurm", "-p gpu",
                         "--detach", "--no-wait", "--json", timeout=60)
    assert as_json.rc == 0, as_json.stderr
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    [queued] = [event for event in events if event["event"] == "queued"]
    assert queued == {"event": "queued", "name": "nw", "host": "gpubox", "jobid": jobid,
                      "job_state": "RUNNING", "existing": True, "attach": hint}
    assert events[-1] == {"event": "stopped", "name": "nw", "host": "gpubox",
                          "server_running": True}
    assert "token" not in as_json.stdout
    assert squeue() == f"{jobid} RUNNING"
    assert run_labhop("stop", "-F", str(sshd.config), "gpubox", "nw").rc == 0
    assert squeue() == ""
    assert wait_until_no_user_processes() == []

"""`labhop HOST --slurm ...`: Jupyter as a batch job on the one-node test cluster, reached
through the loopback sshd acting as the login node (scripts/slurm-setup)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests import jupyter_api
from tests.labhop_cli import LabhopProcess, run_labhop
from tests.test_start_e2e import URL, start, wait_until_no_user_processes
from tests.testbed import SlurmCluster

pytestmark = pytest.mark.e2e


def squeue() -> str:
    return subprocess.run(["squeue", "-h", "-u", "lhtest", "-o", "%i %T"], capture_output=True,
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
    assert "PENDING" in result.stderr  # the queue state was shown while waiting
    assert squeue() == ""


def test_a_job_near_its_walltime_is_announced_and_warned(slurm: SlurmCluster) -> None:
    with start(slurm.login, "gpubox", "--name", "proj", "--slurm", "-p gpu -t 00:09:00") as run:
        run.wait_for(URL, timeout=120)
        run.wait_for(r"job \d+ on \S+: 8m of walltime left", timeout=30)
        run.wait_for(r"the Slurm job ends in 8m \(walltime\); save your work", timeout=30)
        run.interrupt()
        assert run.wait(60) == 0, run.output
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
        assert again["token"] == url["token"]
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

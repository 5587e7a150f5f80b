"""The Slurm test cluster (scripts/slurm-setup), used through the loopback sshd as login node.

If these fail, every Slurm end-to-end failure elsewhere is suspect.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from tests.testbed import HOME, SLURM_READY_STATES, SlurmCluster

pytestmark = pytest.mark.e2e

# A job submitted to the idle node starts within a second or two; these leave room for a busy
# CI machine.
START_TIMEOUT = 20.0
END_TIMEOUT = 30.0


def login(cluster: SlurmCluster, command: str) -> tuple[int, str, str]:
    """Run `command` as lhtest on the login node; (exit status, stdout, stderr)."""
    result = cluster.login.run(cluster.login.alias(), command)
    return result.returncode, result.stdout.strip(), result.stderr.strip()


def submit(cluster: SlurmCluster, options: str) -> str:
    """`sbatch --parsable OPTIONS` on the login node; the job id."""
    status, out, err = login(cluster, f"sbatch --parsable {options}")
    assert status == 0, err
    assert out.isdigit(), out
    return out


def job_line(cluster: SlurmCluster, job_id: str, fields: str = "%T") -> str:
    """The job's squeue line; "" once it has ended.

    squeue leaves ended jobs out, and some seconds later (MinJobAge) slurmctld forgets them
    and squeue fails with "Invalid job id specified"; both read as "".
    """
    status, out, err = login(cluster, f"squeue -h -j {job_id} -o '{fields}'")
    if status != 0:
        assert "Invalid job id" in err, err
        return ""
    return out


def wait_for_line(
    cluster: SlurmCluster, job_id: str, fields: str, prefix: str, timeout: float
) -> str:
    """Poll the job's squeue line until it starts with `prefix` ("" waits for the end)."""
    deadline = time.monotonic() + timeout
    while True:
        line = job_line(cluster, job_id, fields)
        if line.startswith(prefix) and (prefix or not line):
            return line
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id}: waited {timeout:g}s for {prefix or 'the end'!r}: {line!r}")
        time.sleep(0.2)


def wait_until_gone(cluster: SlurmCluster, job_id: str) -> None:
    wait_for_line(cluster, job_id, "%T", "", END_TIMEOUT)


@pytest.fixture
def output_file(slurm: SlurmCluster) -> Iterator[str]:
    """A fresh path in lhtest's home for a job's output (`sbatch -o`), removed afterwards."""
    path = f"{HOME}/slurm-testbed-{secrets.token_hex(4)}.out"
    yield path
    login(slurm, f"rm -f {path}")


def test_node_takes_jobs_in_both_partitions(slurm: SlurmCluster) -> None:
    status, out, err = login(slurm, "sinfo -h -o '%P %a %N %T'")
    assert status == 0, err
    rows = [line.split() for line in out.splitlines()]
    # "debug*": the default partition.
    assert sorted(row[:3] for row in rows) == [
        ["debug*", "up", slurm.node],
        ["gpu", "up", slurm.node],
    ], out
    assert all(row[3] in SLURM_READY_STATES for row in rows), out


def test_batch_job_runs_then_leaves_the_queue(slurm: SlurmCluster, output_file: str) -> None:
    marker = secrets.token_hex(4)
    job_id = submit(
        slurm,
        f"--time=00:30:00 -o {output_file} --wrap 'echo {marker}; hostname; sleep 3; echo end'",
    )
    running = wait_for_line(slurm, job_id, "%T %N %L", "RUNNING ", START_TIMEOUT)
    _state, node, time_left = running.split()
    assert node == slurm.node
    # %L counts down from the --time limit.
    assert time_left in {"30:00", "29:59", "29:58", "29:57"}, running
    wait_until_gone(slurm, job_id)
    status, out, err = login(slurm, f"cat {output_file}")
    assert (status, out) == (0, f"{marker}\n{slurm.node}\nend"), err


def test_gpu_partition_hands_out_the_fake_gpu(slurm: SlurmCluster, output_file: str) -> None:
    job_id = submit(
        slurm, f"-p gpu --gres=gpu:1 -o {output_file} --wrap 'echo CUDA=$CUDA_VISIBLE_DEVICES'"
    )
    wait_until_gone(slurm, job_id)
    assert login(slurm, f"cat {output_file}")[1] == "CUDA=0"


def test_batch_script_gets_home_but_not_the_login_profile(
    slurm: SlurmCluster, output_file: str
) -> None:
    # sbatch passes on the submitting shell's environment (--export=ALL) and runs the script
    # without a login shell, so ~/.profile, which puts ~/jvenv/bin on PATH here, is not read:
    # a job script must set up its environment itself.
    script = 'echo "HOME=$HOME"; echo "jupyter=$(command -v jupyter)"'
    job_id = submit(slurm, f"-o {output_file} --wrap '{script}'")
    wait_until_gone(slurm, job_id)
    assert login(slurm, f"cat {output_file}")[1] == f"HOME={HOME}\njupyter="


def test_unknown_partition_is_refused_at_once(slurm: SlurmCluster) -> None:
    status, out, err = login(slurm, "sbatch --parsable -p nope --wrap true")
    assert status != 0
    assert out == ""
    assert "invalid partition specified" in err, err


@pytest.mark.parametrize(
    ("option", "reason"), [("--hold", "JobHeldUser"), ("--begin=now+1hour", "BeginTime")]
)
def test_scancel_removes_a_pending_job(slurm: SlurmCluster, option: str, reason: str) -> None:
    job_id = submit(slurm, f"{option} --wrap true")
    assert job_line(slurm, job_id, "%T %r") == f"PENDING {reason}"
    status, _out, err = login(slurm, f"scancel {job_id}")
    assert status == 0, err
    wait_until_gone(slurm, job_id)

"""`labhop gpus` and `--gpus` end to end: the real CLI, the loopback sshd, a real Jupyter.

There is no GPU here. The `nvidia-smi` these tests put on lhtest's login PATH (~/bin, which
lhtest's ~/.profile adds when it exists) is a stand-in that prints a RECORDING from
tests/data/nvidia-smi/ (reconstructed from nvidia-smi's documented format; see its README),
not the state of a real GPU.
"""

from __future__ import annotations

import json
import os
import pwd
import re
from collections.abc import Callable, Iterator

import pytest

from tests import fake_nvidia_smi, jupyter_api
from tests.fake_nvidia_smi import recording
from tests.labhop_cli import LabhopProcess, Result, run_labhop
from tests.test_start_e2e import STATE, URL, start, stop_with_ctrl_c, wait_until_no_user_processes
from tests.testbed import HOME, USER, Sshd

pytestmark = pytest.mark.e2e

BIN = HOME / "bin"
Install = Callable[..., None]


def labhop(sshd: Sshd, *args: str, timeout: float = 60) -> Result:
    return run_labhop(args[0], "-F", str(sshd.config), *args[1:], timeout=timeout)


@pytest.fixture
def nvidia_smi() -> Iterator[Install]:
    """install(case, apps=None): put the stand-in for recording `case` on lhtest's PATH."""
    account = pwd.getpwnam(USER)
    created = not BIN.exists()

    def install(case: str, *, apps: str | None = None) -> None:
        fake = fake_nvidia_smi.install(BIN, case, apps=apps)
        for path in (BIN, fake):
            os.chown(path, account.pw_uid, account.pw_gid)

    try:
        yield install
    finally:
        (BIN / "nvidia-smi").unlink(missing_ok=True)
        if created and BIN.exists() and not any(BIN.iterdir()):
            BIN.rmdir()


def one_error_line(result: Result) -> str:
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("labhop: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_table_of_an_eight_gpu_box(sshd: Sshd, nvidia_smi: Install) -> None:
    nvidia_smi("a100-8x")
    result = labhop(sshd, "gpus", "gpubox")
    assert result.rc == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["GPU", "NAME", "MEMORY", "UTIL", "TEMP", "PROCESSES"]
    assert [row.split()[0] for row in rows] == [str(i) for i in range(8)]
    first = rows[0]
    for text in ("NVIDIA A100-SXM4-80GB", "██████████ 76.4/80.0 GiB", "100 %", "67 °C",
                 "2291847 python 76.4 GiB"):
        assert text in first
    assert re.search(r"░░░░░░░░░░ 0\.0/80\.0 GiB\s+0 %\s+33 °C\s+-$", rows[3].rstrip())


def test_json(sshd: Sshd, nvidia_smi: Install) -> None:
    nvidia_smi("h100-mig")
    result = labhop(sshd, "gpus", "gpubox", "--json")
    assert result.rc == 0, result.stderr
    [gpu] = json.loads(result.stdout)
    assert gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert (gpu["memory_used_mib"], gpu["memory_total_mib"]) == (19843, 81559)
    assert gpu["utilization_pct"] is None  # [N/A] under MIG
    assert [(p["pid"], p["used_memory_mib"]) for p in gpu["processes"]] == [
        (1733052, None), (1733390, None)]


def test_a_host_without_nvidia_smi_is_one_line_and_status_28(sshd: Sshd) -> None:
    result = labhop(sshd, "gpus", "gpubox")
    assert result.rc == 28
    assert result.stdout == ""
    assert "gpubox has no nvidia-smi" in one_error_line(result)
    # For a script: an empty array on stdout, the same reason and status.
    as_json = labhop(sshd, "gpus", "gpubox", "--json")
    assert (as_json.rc, json.loads(as_json.stdout)) == (28, [])
    assert "gpubox has no nvidia-smi" in one_error_line(as_json)


def test_a_failing_driver_is_its_first_line(sshd: Sshd, nvidia_smi: Install) -> None:
    nvidia_smi("driver-failed")
    result = labhop(sshd, "gpus", "gpubox", "--json")
    assert result.rc == 28
    assert ("nvidia-smi failed on gpubox: NVIDIA-SMI has failed because it couldn't "
            "communicate with the NVIDIA driver") in one_error_line(result)
    assert json.loads(result.stdout) == []


def test_watch_redraws_until_ctrl_c(sshd: Sshd, nvidia_smi: Install) -> None:
    nvidia_smi("t4-idle")
    with LabhopProcess.start("gpus", "-F", str(sshd.config), "gpubox", "--watch") as watch:
        # Without a terminal each refresh is a new titled table, two seconds apart.
        watch.wait_for(r"(?s)(^gpubox  \d{4}-\d\d-\d\d .*?Tesla T4.*?){2}", timeout=30)
        watch.interrupt()
        assert watch.wait(15) == 0, watch.output
    assert "Traceback" not in watch.output


def test_a_kernel_on_a_gpu_shows_its_server(sshd: Sshd, nvidia_smi: Install) -> None:
    with start(sshd, "gpubox", "--name", "proj") as run:
        url = run.wait_for(URL, timeout=90)
        # No nvidia-smi on the host: a start shows no GPU table at all.
        assert "NVIDIA" not in run.output and "MEMORY" not in run.output
        output, _ = jupyter_api.execute(f"http://127.0.0.1:{url['port']}", url["token"],
                                        "import os; print(os.getpid())")
        kernel = output.strip()
        # The recorded process list of the RTX 4090 box, with its Python process's PID
        # replaced by the live kernel's: a recording edited for this test.
        apps = recording("rtx4090-2x", "query-compute-apps").replace("48213", kernel)
        nvidia_smi("rtx4090-2x", apps=apps)
        result = labhop(sshd, "gpus", "gpubox")
        assert result.rc == 0, result.stderr
        assert f"{USER} {kernel} python 1.1 GiB server 'proj'" in result.stdout
        [gpu0, _] = json.loads(labhop(sshd, "gpus", "gpubox", "--json").stdout)
        assert gpu0["processes"][0]["server"] == "proj"
        stop_with_ctrl_c(run)


@pytest.mark.parametrize(("spec", "visible"), [("1", "1"), ("auto", "0")])
def test_gpus_sets_what_the_kernels_see(sshd: Sshd, nvidia_smi: Install, spec: str,
                                        visible: str) -> None:
    nvidia_smi("rtx4090-2x")
    with start(sshd, "gpubox", "--name", "proj", "--gpus", spec) as run:
        url = run.wait_for(URL, timeout=90)
        output, _ = jupyter_api.execute(
            f"http://127.0.0.1:{url['port']}", url["token"],
            "import os; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['CUDA_DEVICE_ORDER'])",
        )
        assert output.split() == [visible, "PCI_BUS_ID"]
        run.wait_for(r"Press Ctrl\+C")
        # After ready: the compact table of the GPU the server uses, and only that one.
        table = run.output.split(url.group(0), 1)[1]
        assert re.search(rf"^{visible}\s+NVIDIA GeForce RTX 4090\s", table, re.MULTILINE)
        assert not re.search(rf"^{1 - int(visible)}\s+NVIDIA", table, re.MULTILINE)
        if visible == "1":
            assert "GPU 1 is nearly full (22.3/24.0 GiB used), busy (94 %)" in table
        stop_with_ctrl_c(run)


def test_a_gpu_the_host_lacks_is_one_line_naming_those_it_has(sshd: Sshd,
                                                               nvidia_smi: Install) -> None:
    nvidia_smi("rtx4090-2x")
    result = run_labhop("-F", str(sshd.config), "gpubox", "--no-browser", "--gpus", "9",
                        timeout=60)
    assert result.rc == 28, result.stderr
    assert one_error_line(result).endswith(
        "--gpus 9: gpubox has no GPU 9; its GPUs: 0-1 NVIDIA GeForce RTX 4090")
    # The check comes before the launch: nothing was started, so nothing is "stopped".
    assert "stopping" not in result.stderr and "starting" not in result.stderr, result.stderr
    assert wait_until_no_user_processes() == []
    assert not STATE.exists() or not any(STATE.iterdir())


def test_gpus_on_a_host_without_nvidia_smi_is_an_error(sshd: Sshd) -> None:
    result = run_labhop("-F", str(sshd.config), "gpubox", "--no-browser", "--gpus", "auto",
                        timeout=60)
    assert result.rc == 28, result.stderr
    assert "gpubox has no nvidia-smi" in one_error_line(result)
    assert "stopping" not in result.stderr, result.stderr


def test_a_bad_gpus_value_fails_before_connecting() -> None:
    result = run_labhop("nosuchhost.invalid", "--no-browser", "--gpus", "first")
    assert result.rc == 2  # a bad command line
    assert "bad --gpus 'first': use auto" in one_error_line(result)

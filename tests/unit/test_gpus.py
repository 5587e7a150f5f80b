"""GPUs: nvidia-smi's CSV parsed, --gpus resolved, table rows and warnings, and the query
script run by the local `sh` against a stand-in nvidia-smi that prints a recording.

The outputs in tests/data/nvidia-smi/ are reconstructed from nvidia-smi's documented
format (see its README), not captured from real GPUs.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labhop import gpus, model
from labhop.backends.base import entry_kinds
from labhop.errors import ConfigError, NoGpusError, RemoteError
from labhop.gpus import Gpu, GpuProcess, GpuReport
from labhop.remote import gpu_query, jupyter, protocol, scripts
from tests import fake_nvidia_smi
from tests.fake_nvidia_smi import recording

A100 = "GPU-6513270e-269e-4d37-b2a7-4de452e6b438"
RTX1 = "GPU-0cb1e29c-658c-4a14-95e6-0af593bd04cf"


def report(case: str) -> GpuReport:
    """What the parser makes of a recording, before any /proc lookups."""
    return GpuReport(
        gpus=tuple(gpus.parse_gpus(recording(case, "query-gpu"))),
        processes=tuple(gpus.parse_processes(recording(case, "query-compute-apps"))),
        user="me",
    )


# -- parsing -----------------------------------------------------------------------------
def test_eight_a100s_with_processes() -> None:
    found = gpus.parse_gpus(recording("a100-8x", "query-gpu"))
    assert [gpu.index for gpu in found] == list(range(8))
    assert found[0] == Gpu(0, A100, "NVIDIA A100-SXM4-80GB", 78213, 81920, 100, 67)
    assert found[6].memory_free_mib == 81920 - 65877
    processes = gpus.parse_processes(recording("a100-8x", "query-compute-apps"))
    assert processes[0] == GpuProcess(A100, 2291847,
                                      "/home/alice/miniforge3/envs/torch/bin/python", 78190)
    assert [p.pid for p in processes] == [2291847, 2291848, 1838204, 1977310, 2301115]


def test_mig_gpu_has_no_utilisation_and_processes_no_memory() -> None:
    [gpu] = gpus.parse_gpus(recording("h100-mig", "query-gpu"))
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.utilization_pct is None
    assert (gpu.memory_used_mib, gpu.memory_total_mib, gpu.temperature_c) == (19843, 81559, 36)
    processes = gpus.parse_processes(recording("h100-mig", "query-compute-apps"))
    assert [(p.pid, p.used_memory_mib) for p in processes] == [(1733052, None), (1733390, None)]


def test_not_supported_is_none_too() -> None:
    [gpu] = gpus.parse_gpus(recording("geforce-old", "query-gpu"))
    assert (gpu.name, gpu.utilization_pct, gpu.temperature_c) == ("GeForce GTX 780", None, 47)


def test_no_processes() -> None:
    assert gpus.parse_processes(recording("t4-idle", "query-compute-apps")) == []
    [gpu] = gpus.parse_gpus(recording("t4-idle", "query-gpu"))
    assert gpu == Gpu(0, "GPU-6b4cb242-4a23-4596-a217-beaddbc496cb", "Tesla T4", 0, 15360, 0, 38)


def test_other_users_processes_without_names() -> None:
    processes = gpus.parse_processes(recording("v100-container", "query-compute-apps"))
    assert [(p.pid, p.process_name, p.used_memory_mib) for p in processes] == [
        (88231, "", 30122),
        (90417, "", None),
        (91002, "", None),
    ]


def test_names_with_the_separator_and_lines_that_are_not_rows() -> None:
    text = (
        "WARNING: infoROM is corrupted at gpu 0000:3B:00.0\n"
        "0, GPU-1, Weird, Name, 10, 100, 5, 40\n"
        "\n"
    )
    assert gpus.parse_gpus(text) == [Gpu(0, "GPU-1", "Weird, Name", 10, 100, 5, 40)]
    apps = "GPU-1, 42, /opt/my, app/python, 512\nNo running processes found\n"
    assert gpus.parse_processes(apps) == [GpuProcess("GPU-1", 42, "/opt/my, app/python", 512)]


def test_failures_are_one_line_each() -> None:
    missing = GpuReport(smi="missing")
    assert gpus.problem(missing, "gamer") == (
        "gamer has no nvidia-smi: no NVIDIA driver is installed there, or nvidia-smi is not "
        "on the login PATH")
    driver = GpuReport(smi="failed", message=recording("driver-failed", "query-gpu").strip())
    assert gpus.problem(driver, "gamer") == (
        "nvidia-smi failed on gamer: NVIDIA-SMI has failed because it couldn't communicate "
        "with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and "
        "running.")
    nothing = GpuReport(smi="failed", message="No devices were found")
    assert gpus.problem(nothing, "gamer") == "nvidia-smi on gamer finds no GPU"
    assert gpus.problem(GpuReport(), "gamer") == "nvidia-smi on gamer finds no GPU"
    assert gpus.problem(report("t4-idle"), "gamer") is None
    with pytest.raises(NoGpusError, match="no nvidia-smi"):
        gpus.require_gpus(missing, "gamer")


# -- --gpus ------------------------------------------------------------------------------
def test_auto_picks_the_most_free_memory_and_the_lowest_index_on_a_tie() -> None:
    assert gpus.pick_auto(report("rtx4090-2x").gpus).index == 0
    assert gpus.pick_auto(report("a100-8x").gpus).index == 3  # 3, 5 and 7 are all empty
    unknown = Gpu(0, "GPU-a", "X", None, None, None, None)
    known = Gpu(1, "GPU-b", "X", 900, 1000, 0, 30)
    assert gpus.pick_auto([unknown, known]) == known


@pytest.mark.parametrize(
    ("text", "selection"),
    [
        ("auto", gpus.GpuSelection("auto")),
        (" ALL ", gpus.GpuSelection("all")),
        ("none", gpus.GpuSelection("none")),
        ("1", gpus.GpuSelection("list", ("1",))),
        ("0,2", gpus.GpuSelection("list", ("0", "2"))),
        ("2, 0, 2", gpus.GpuSelection("list", ("2", "0"))),
        ("GPU-6513270e", gpus.GpuSelection("list", ("GPU-6513270e",))),
        ("MIG-4f1c,0", gpus.GpuSelection("list", ("MIG-4f1c", "0"))),
    ],
)
def test_gpu_selection_forms(text: str, selection: gpus.GpuSelection) -> None:
    assert gpus.parse_gpu_selection(text) == selection


@pytest.mark.parametrize("text", ["", "first", "-1", "0;1", "1,", "cuda:0"])
def test_bad_gpu_selection_names_the_forms(text: str) -> None:
    with pytest.raises(ConfigError, match=r"bad --gpus .*: use auto .*GPU UUIDs"):
        gpus.parse_gpu_selection(text)


def choose(spec: str, case: str = "a100-8x") -> gpus.GpuChoice:
    return gpus.choose(gpus.parse_gpu_selection(spec), report(case), "gamer", spec)


def test_choose_indices_auto_all_and_none() -> None:
    a100 = report("a100-8x")
    assert choose("1") == gpus.GpuChoice("1", (a100.gpus[1],))
    assert choose("2,0").cuda_visible_devices == "2,0"
    assert choose("auto", "rtx4090-2x").cuda_visible_devices == "0"
    assert choose("all") == gpus.GpuChoice("", a100.gpus)
    assert gpus.choose(gpus.GpuSelection("none"), GpuReport(smi="missing"), "gamer", "none") == (
        gpus.GpuChoice("-1", ()))


def test_choose_uuids_by_unique_prefix_and_never_mixed_with_indices() -> None:
    assert choose("gpu-6513270e").cuda_visible_devices == A100
    mixed = choose("GPU-6513270e,1")
    assert mixed.cuda_visible_devices == f"{A100},GPU-d23f0824-128b-4f33-8c5c-7fd0a6a3a450"
    assert [gpu.index for gpu in mixed.gpus] == [0, 1]
    assert choose("MIG-4f1c").cuda_visible_devices == "MIG-4f1c"


@pytest.mark.parametrize(
    ("spec", "case", "message"),
    [
        ("9", "a100-8x", "--gpus 9: gamer has no GPU 9; its GPUs: 0-7 NVIDIA A100-SXM4-80GB"),
        ("2", "rtx4090-2x", "--gpus 2: gamer has no GPU 2; its GPUs: 0-1 NVIDIA GeForce RTX 4090"),
        ("GPU-ffff", "t4-idle", "no GPU on gamer has the UUID GPU-ffff; its GPUs: 0 Tesla T4"),
        ("GPU-", "rtx4090-2x", "GPU- matches 2 GPUs on gamer; give more of the UUID"),
    ],
)
def test_choose_names_the_gpus_that_exist(spec: str, case: str, message: str) -> None:
    with pytest.raises(NoGpusError) as caught:
        choose(spec, case)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_choose_needs_gpus_except_for_none() -> None:
    with pytest.raises(NoGpusError, match="gamer has no nvidia-smi"):
        gpus.choose(gpus.GpuSelection("auto"), GpuReport(smi="missing"), "gamer", "auto")


def test_describe_mixed_gpus() -> None:
    mixed = [Gpu(0, "a", "NVIDIA RTX A6000", 0, 1, 0, 0), Gpu(1, "b", "NVIDIA GeForce RTX 3090",
                                                              0, 1, 0, 0),
             Gpu(2, "c", "NVIDIA GeForce RTX 3090", 0, 1, 0, 0)]
    assert gpus.describe_gpus(mixed) == "0 NVIDIA RTX A6000, 1-2 NVIDIA GeForce RTX 3090"


# -- what is shown -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("used", "total", "bar"),
    [
        (21811, 40960, "█████░░░░░ 21.3/40.0 GiB"),
        (0, 81920, "░░░░░░░░░░ 0.0/80.0 GiB"),
        (81920, 81920, "██████████ 80.0/80.0 GiB"),
        (None, 24564, "?????????? ?/24.0 GiB"),
    ],
)
def test_memory_bar(used: int | None, total: int | None, bar: str) -> None:
    assert gpus.memory_bar(used, total) == bar


def test_rows_show_each_process_with_its_user_and_server() -> None:
    base = report("rtx4090-2x")
    kernel = GpuProcess(base.gpus[0].uuid, 48213, "/home/me/.venv/bin/python", 1158, "me", "proj")
    shown = GpuReport(base.gpus, (kernel, base.processes[1]), user="me")
    assert gpus.gpu_rows(shown) == [
        ["0", "NVIDIA GeForce RTX 4090", "█░░░░░░░░░ 1.8/24.0 GiB", "3 %", "41 °C",
         "me 48213 python 1.1 GiB server 'proj'"],
        ["1", "NVIDIA GeForce RTX 4090", "█████████░ 22.3/24.0 GiB", "94 %", "72 °C",
         "? 3917 ollama_llama_server 22.3 GiB"],
    ]
    [mig] = gpus.gpu_rows(report("h100-mig"))
    assert mig[3] == "n/a"
    assert mig[5] == "? 1733052 python3 ? GiB\n? 1733390 python3 ? GiB"
    assert gpus.gpu_rows(report("t4-idle"))[0][5] == "-"
    assert gpus.gpu_rows(base, [base.gpus[1]])[0][0] == "1"


def test_warning_for_nearly_full_busy_or_shared_gpus() -> None:
    rtx = report("rtx4090-2x")
    assert gpus.warning_line(rtx, rtx.gpus[:1]) is None
    assert gpus.warning_line(rtx, rtx.gpus) == (
        "GPU 1 is nearly full (22.3/24.0 GiB used), busy (94 %)")
    gpu = rtx.gpus[0]
    others = [GpuProcess(gpu.uuid, 1, "python", 10, "bob"), GpuProcess(gpu.uuid, 2, "x", 1, "me"),
              GpuProcess(gpu.uuid, 3, "", 1, ""), GpuProcess(gpu.uuid, 4, "y", 1, "alice")]
    assert gpus.nearly_full_or_busy(gpu, others, me="me") == "GPU 0 is used by alice, bob"
    a100 = report("a100-8x")
    assert gpus.warning_line(a100, a100.gpus) == (
        "GPU 0 is nearly full (76.4/80.0 GiB used), busy (100 %); "
        "GPU 1 is nearly full (76.4/80.0 GiB used), busy (100 %); GPU 6 is busy (87 %)")


def test_json_nests_processes_under_their_gpu() -> None:
    [first, *_] = report("a100-8x").as_json()
    assert first["index"] == 0
    assert first["utilization_pct"] == 100
    assert first["processes"] == [{
        "gpu_uuid": A100, "pid": 2291847,
        "process_name": "/home/alice/miniforge3/envs/torch/bin/python",
        "used_memory_mib": 78190, "user": "", "server": "",
    }]


# -- the query script, run by the local sh -----------------------------------------------
def run_query(home: Path, path: str) -> GpuReport:
    result = subprocess.run(
        ["sh", "-s"], input=gpu_query.query_script().text, text=True, capture_output=True,
        env={"HOME": str(home), "PATH": path}, cwd=home, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return gpu_query.parse_report(result.stdout)


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[int]:
    """A process that looks like a kernel of the labhop server 'proj' in tmp_path's home."""
    state = tmp_path / ".local/state/labhop/servers/proj"
    state.mkdir(parents=True)
    (state / "id").write_text("0123456789abcdef")
    child = subprocess.Popen(["sleep", "60"], env={"LABHOP_SERVER_ID": "0123456789abcdef",
                                                   "PATH": "/usr/bin:/bin"})
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("case", ["a100-8x", "rtx4090-2x", "h100-mig", "t4-idle",
                                  "v100-container", "geforce-old"])
def test_script_reports_what_nvidia_smi_printed(tmp_path: Path, case: str) -> None:
    fake_nvidia_smi.install(tmp_path / "bin", case)
    found = run_query(tmp_path, f"{tmp_path}/bin:/usr/bin:/bin")
    expected = report(case)
    assert found.smi == "ok"
    assert found.gpus == expected.gpus
    assert [(p.pid, p.process_name, p.used_memory_mib) for p in found.processes] == [
        (p.pid, p.process_name, p.used_memory_mib) for p in expected.processes]
    assert found.user == pwd.getpwuid(os.getuid()).pw_name


def test_script_names_the_user_and_server_of_a_kernel(tmp_path: Path, kernel: int) -> None:
    # The recorded process list, with one PID replaced by a live local process.
    apps = recording("rtx4090-2x", "query-compute-apps").replace("48213", str(kernel))
    fake_nvidia_smi.install(tmp_path / "bin", "rtx4090-2x", apps=apps)
    found = run_query(tmp_path, f"{tmp_path}/bin:/usr/bin:/bin")
    me = pwd.getpwuid(os.getuid()).pw_name
    ours = [p for p in found.processes if p.pid == kernel]
    assert [(p.user, p.server) for p in ours] == [(me, "proj")]
    assert f"{me} {kernel} python 1.1 GiB server 'proj'" in gpus.gpu_rows(found)[0][5]


def test_script_without_nvidia_smi(tmp_path: Path) -> None:
    if shutil.which("nvidia-smi", path="/usr/bin:/bin:/usr/local/nvidia/bin"):
        pytest.skip("this machine has a real nvidia-smi")
    found = run_query(tmp_path, "/usr/bin:/bin")
    assert found.smi == "missing"
    assert gpus.problem(found, "gamer") is not None


@pytest.mark.parametrize(("case", "message"), [
    ("driver-failed", "NVIDIA-SMI has failed because it couldn't communicate"),
    ("no-devices", "No devices were found"),
])
def test_script_when_nvidia_smi_fails(tmp_path: Path, case: str, message: str) -> None:
    fake_nvidia_smi.install(tmp_path / "bin", case)
    found = run_query(tmp_path, f"{tmp_path}/bin:/usr/bin:/bin")
    assert found.smi == "failed"
    assert found.message.startswith(message)


# -- the launch hands the choice to Jupyter ----------------------------------------------
@pytest.mark.parametrize(("value", "inherited", "seen"), [
    ("1", "", "CUDA_VISIBLE_DEVICES=1 CUDA_DEVICE_ORDER=PCI_BUS_ID"),
    ("", "3", "CUDA_VISIBLE_DEVICES=3 CUDA_DEVICE_ORDER="),
])
def test_launch_exports_cuda_visible_devices_only_when_chosen(
        tmp_path: Path, value: str, inherited: str, seen: str) -> None:
    env_bin = tmp_path / "env" / "bin"
    env_bin.mkdir(parents=True)
    (env_bin / "activate").write_text(f'PATH="{env_bin}:$PATH"; export PATH\n')
    stub = env_bin / "jupyter-lab"
    # Stands in for Jupyter: records what it was given, then waits to be stopped.
    stub.write_text('#!/bin/sh\necho "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-}'
                    ' CUDA_DEVICE_ORDER=${CUDA_DEVICE_ORDER-}" > "$HOME/seen"\nexec sleep 30\n')
    stub.chmod(0o755)
    request = jupyter.LaunchRequest(name="proj", server_id="0123456789abcdef", token="f" * 48,
                                   env=model.EnvSpec("venv", "~/env"),
                                   cuda_visible_devices=value)
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    if inherited:
        env["CUDA_VISIBLE_DEVICES"] = inherited
    script = scripts.launch_script(request, kinds=entry_kinds())
    result = subprocess.run(["sh", "-s"], input=script.text, text=True,
                            capture_output=True, env=env, cwd=tmp_path, timeout=30, check=False)
    pid = protocol.parse_output(result.stdout, protocol.LAUNCH_KEYS).get("pid")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        deadline = time.monotonic() + 10
        while not (tmp_path / "seen").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "seen").read_text().strip() == seen
    finally:
        if pid:
            os.kill(int(pid), 9)


# -- the protocol: names come back whole, nothing else is believed -------------------------
def test_a_process_name_with_line_breaks_comes_back_whole() -> None:
    apps = (f"{RTX1}, 42, /opt/odd\nlabhop:user=evil\n, 512\n"
            f"{RTX1}, 43, /usr/bin/python3, 1024\nNo running processes found\n")
    assert gpus.parse_processes(apps) == [
        GpuProcess(RTX1, 42, "/opt/odd\nlabhop:user=evil", 512),
        GpuProcess(RTX1, 43, "/usr/bin/python3", 1024),
    ]


def test_a_report_with_a_repeated_field_is_refused() -> None:
    with pytest.raises(RemoteError, match="GPU query script printed 'user' twice"):
        gpu_query.parse_report("labhop:user=me\nlabhop:nvidia-smi=ok\nlabhop:user=evil\n")
    with pytest.raises(RemoteError, match="the key 'endpoint', which it never prints"):
        gpu_query.parse_report("labhop:user=me\nlabhop:endpoint=tcp:127.0.0.1:1\n")


def test_a_server_name_is_kept_exactly() -> None:
    text = ("labhop:user=me\nlabhop:nvidia-smi=ok\n"
            f"labhop:gpu=0, {RTX1}, NVIDIA GeForce RTX 4090, 1, 24564, 0, 30\n"
            f"labhop:app={RTX1}, 42, python, 512\nlabhop:owner=42 me\n"
            "labhop:sid=42 0123456789abcdef\nlabhop:server=0123456789abcdef  odd%0Aname \n")
    [process] = gpu_query.parse_report(text).processes
    assert (process.user, process.server) == ("me", " odd\nname ")

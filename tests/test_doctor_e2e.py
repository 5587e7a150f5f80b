"""`labhop doctor HOST` end to end: the real CLI against the loopback sshd (and one that
refuses Unix-socket forwarding), lhtest's real login shell, Jupyter, venvs and conda
stand-in, the nvidia-smi stand-in, and the one-node Slurm cluster.

After every run nothing may stay: no process of lhtest's, no state entry, no scratch
directory in /tmp, no master in the test's runtime directory.
"""

from __future__ import annotations

import json
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from labhop.commands.doctor_checks import LABELS
from tests.labhop_cli import Result, run_labhop
from tests.test_gpus_e2e import Install, nvidia_smi  # noqa: F401 -- the fixture
from tests.test_start_e2e import wait_until_no_user_processes
from tests.testbed import HOME, USER, Askpass, SlurmCluster, Sshd, start_sshd, user_processes

pytestmark = pytest.mark.e2e

ORDER = list(LABELS.values())
SKIP = "\u2013"  # the mark of a check not made


def doctor(sshd: Sshd, *args: str) -> Result:
    return run_labhop("doctor", "-F", str(sshd.config), *args, timeout=120)


def lines(result: Result) -> dict[str, str]:
    """Each check's line by its label, with the fix line (if any) appended after a '\n'."""
    found: dict[str, str] = {}
    last = ""
    for line in result.stdout.splitlines():
        mark, _, rest = line.partition(" ")
        # The longest label first: "login shell" also starts with "login ".
        label = next((label for label in sorted(ORDER, key=len, reverse=True)
                      if rest.startswith(label + " ")), "")
        if mark in ("✓", "✗", SKIP) and label:
            found[label] = line
            last = label
        elif line.strip().startswith("fix: ") and last:
            found[last] += "\n" + line.strip()
    return found


def marks(result: Result) -> list[str]:
    checks = lines(result)
    assert list(checks) == ORDER, result.stdout + result.stderr
    return [checks[label][0] for label in ORDER]


def assert_nothing_stayed(runtime: Path, *, sessions_allowed: bool = False) -> None:
    """No Jupyter, listener or other process of lhtest's (only the sessions of a master
    the test itself holds open, when allowed), no state, no scratch dir, no master."""
    if sessions_allowed:
        left = [(pid, cmd) for pid, cmd in user_processes() if not cmd.startswith("sshd:")]
    else:
        left = wait_until_no_user_processes()
    assert left == []
    assert not (HOME / ".local/state/labhop").exists()
    assert list(Path("/tmp").glob("labhop-doctor.*")) == []  # noqa: S108 -- the remote's /tmp
    sockets = [path for path in runtime.rglob("*") if stat.S_ISSOCK(path.lstat().st_mode)]
    assert sockets == []
    assert list(runtime.rglob("run-*")) == []


def test_everything_passes_on_the_test_host(sshd: Sshd, nvidia_smi: Install,  # noqa: F811
                                            runtime_dir: Path) -> None:
    nvidia_smi("rtx4090-2x")
    result = doctor(sshd, "gpubox", "--env", "venv:~/jvenv")
    assert result.rc == 0, result.stdout + result.stderr
    assert marks(result) == ["✓"] * 10 + [SKIP]
    checks = lines(result)
    assert checks["ssh client"].split(None, 3)[3].startswith("OpenSSH_")
    assert f"{USER}@127.0.0.1 port " in checks["ssh config"]
    assert "no jump host" in checks["ssh config"]
    assert "logged in to " in checks["login"] and f" as {USER} in " in checks["login"]
    assert "/bin/bash, run as a login shell (bash -l); PATH=" in checks["login shell"]
    assert f"{HOME}/jvenv/bin" in checks["login shell"]
    assert f"venv:~/jvenv activates (prefix {HOME}/jvenv)" in checks["environment"]
    assert (f"{HOME}/jvenv/bin/jupyter-lab: jupyter_server 2.21.1, jupyterlab 4.6.6, "
            "notebook 7.6.5") in checks["Jupyter"]
    assert "a byte round trip to a test socket through sshd worked" in checks["Unix socket"]
    assert checks["setsid"].endswith("/setsid")
    assert f"{HOME}/.local/state/labhop/servers is writable" in checks["state directory"]
    assert "2 GPUs: 0-1 NVIDIA GeForce RTX 4090" in checks["GPUs"]
    assert "not asked for (no --slurm)" in checks["Slurm"]
    assert result.stdout.rstrip().endswith("all checks passed")
    assert_nothing_stayed(runtime_dir)


def test_json_is_one_object_with_every_check(sshd: Sshd, nvidia_smi: Install,  # noqa: F811
                                             runtime_dir: Path) -> None:
    nvidia_smi("t4-idle")
    result = doctor(sshd, "gpubox", "--json", "--no-multiplex")
    assert result.rc == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert (report["host"], report["ok"], report["exit"]) == ("gpubox", True, 0)
    assert [check["name"] for check in report["checks"]] == list(LABELS)
    assert [check["ok"] for check in report["checks"]] == [True] * 10 + [None]
    for check in report["checks"]:
        assert set(check) == {"name", "ok", "detail", "fix"}
    by_name = {check["name"]: check for check in report["checks"]}
    assert by_name["env"]["detail"] == "login PATH (no --env)"
    assert "one ssh per step" in by_name["login"]["detail"]
    assert_nothing_stayed(runtime_dir)
    # The same checks as the lines people read (the login's time aside).
    human = lines(doctor(sshd, "gpubox", "--no-multiplex"))
    for check in report["checks"]:
        line = human[LABELS[check["name"]]]
        mark = {True: "✓", False: "✗", None: SKIP}[check["ok"]]
        assert line.startswith(f"{mark} {LABELS[check['name']]} ")
        if check["name"] != "login":
            assert line.endswith(f"  {check['detail']}")
    assert_nothing_stayed(runtime_dir)


@pytest.mark.parametrize("case", [
    ("venv:~/nope", f"no virtualenv at {HOME}/nope on gpubox ",
     f"fix: create it with python3 -m venv {HOME}/nope"),
    ("conda:nope", "conda environment 'nope' not found on gpubox ",
     "fix: list them with: conda env list"),
    # dash's `.` of a missing file would end the script; its own words must reach the user.
    ("cmd:. /opt/nope/setup.sh",
     ".: cannot open /opt/nope/setup.sh",
     "fix: check --env cmd:. /opt/nope/setup.sh"),
    ("cmd:false", "the --env command failed on gpubox: it exited with status 1",
     "fix: check --env cmd:false"),
], ids=["venv", "conda", "cmd-dot", "cmd-false"])
def test_a_missing_env_is_status_20_with_its_fix(sshd: Sshd, nvidia_smi: Install,  # noqa: F811
                                                 runtime_dir: Path,
                                                 case: tuple[str, str, str]) -> None:
    env, detail, fix = case
    nvidia_smi("t4-idle")
    result = doctor(sshd, "gpubox", "--env", env)
    assert result.rc == 20, result.stdout + result.stderr
    checks = lines(result)
    line, fix_line = checks["environment"].split("\n")
    assert line.startswith("✗ environment") and detail in line, line
    assert "{host}" not in line
    assert fix_line == fix
    assert checks["Jupyter"].startswith(f"{SKIP} Jupyter")
    # The checks that do not need the environment still ran.
    assert checks["setsid"].startswith("✓") and checks["GPUs"].startswith("✓")
    assert result.stdout.rstrip().endswith("1 check failed; exit status 20 (environment)")
    assert_nothing_stayed(runtime_dir)


def test_jupyter_missing_from_the_env_is_status_21(sshd: Sshd, nvidia_smi: Install,  # noqa: F811
                                                   runtime_dir: Path) -> None:
    nvidia_smi("t4-idle")
    result = doctor(sshd, "gpubox", "--env", "venv:~/emptyvenv")
    assert result.rc == 21, result.stdout + result.stderr
    checks = lines(result)
    assert checks["environment"].startswith("✓")
    assert checks["Jupyter"].startswith("✗ Jupyter")
    assert "jupyter-lab is not installed in venv:~/emptyvenv" in checks["Jupyter"]
    assert "fix: install it there: pip install jupyterlab" in checks["Jupyter"]
    assert_nothing_stayed(runtime_dir)


def test_an_unknown_host_is_status_10_and_the_rest_is_not_checked(runtime_dir: Path) -> None:
    result = run_labhop("doctor", "nosuchhost.invalid", timeout=60)
    assert result.rc == 10, result.stdout + result.stderr
    assert marks(result) == ["✓", "✓", "✗"] + [SKIP] * 8
    login = lines(result)["login"]
    assert "unknown host 'nosuchhost.invalid'" in login
    assert "fix: check the spelling or add a Host entry to ~/.ssh/config" in login
    assert_nothing_stayed(runtime_dir)


def test_gpus_with_and_without_nvidia_smi(sshd: Sshd, nvidia_smi: Install,  # noqa: F811
                                          runtime_dir: Path) -> None:
    # A host without GPUs is a note: `labhop gpubox` starts there, so doctor passes.
    without = doctor(sshd, "gpubox")
    assert without.rc == 0, without.stdout + without.stderr
    assert marks(without) == ["✓"] * 10 + [SKIP]
    assert "none: gpubox has no nvidia-smi" in lines(without)["GPUs"]
    assert without.stdout.rstrip().endswith("all checks passed")
    # Asked for GPUs, it is a failure, with its fix.
    asked = doctor(sshd, "gpubox", "--gpus", "0")
    assert asked.rc == 28, asked.stdout + asked.stderr
    assert marks(asked) == ["✓"] * 9 + ["✗", SKIP]
    gpu_line = lines(asked)["GPUs"]
    assert "gpubox has no nvidia-smi" in gpu_line
    assert "fix: install the NVIDIA driver" in gpu_line
    assert_nothing_stayed(runtime_dir)

    nvidia_smi("a100-8x")
    with_smi = doctor(sshd, "gpubox")
    assert with_smi.rc == 0, with_smi.stdout + with_smi.stderr
    assert "8 GPUs: 0-7 NVIDIA A100-SXM4-80GB" in lines(with_smi)["GPUs"]
    # --gpus names a GPU the host does not have: the line names those it has.
    wrong = doctor(sshd, "gpubox", "--gpus", "9")
    assert wrong.rc == 28, wrong.stdout + wrong.stderr
    assert "GPU 9" in lines(wrong)["GPUs"] or "9" in lines(wrong)["GPUs"]
    assert_nothing_stayed(runtime_dir)


def test_slurm_commands_and_an_existing_partition(slurm: SlurmCluster, runtime_dir: Path) -> None:
    result = doctor(slurm.login, "gpubox", "--slurm", "-p gpu -t 00:10:00")
    assert result.rc == 0, result.stdout + result.stderr
    checks = lines(result)
    assert checks["Slurm"].startswith("✓ Slurm")
    assert "sbatch, squeue, scancel found; partition gpu is up" in checks["Slurm"]
    assert checks["GPUs"].startswith(f"{SKIP} GPUs")  # on the compute nodes
    assert_nothing_stayed(runtime_dir)


def test_a_nonexistent_partition_is_status_30(slurm: SlurmCluster, runtime_dir: Path) -> None:
    result = doctor(slurm.login, "gpubox", "--slurm", "--partition=nope")
    assert result.rc == 30, result.stdout + result.stderr
    line = lines(result)["Slurm"]
    assert line.startswith("✗ Slurm")
    assert "no partition 'nope'; the partitions: debug (default), gpu" in line
    assert "fix: pick one of those with -p/--partition in --slurm" in line
    assert_nothing_stayed(runtime_dir)


@pytest.fixture(scope="module")
def nostream_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with start_sshd(tmp_path_factory.mktemp("nostream"), host_alias="nostream",
                    sshd_options={"AllowStreamLocalForwarding": "no"}) as server:
        yield server


@pytest.fixture
def users_master(nostream_sshd: Sshd) -> Iterator[Path]:
    """The user's own ControlMaster to the host, as a ControlPath in their ssh config
    would give them, opened before labhop runs."""
    base = Path(tempfile.mkdtemp(prefix="lhum-"))
    path, log = base / "cm", base / "master.log"
    # stderr to a file: the master that -f leaves behind keeps it open.
    with log.open("w") as stderr:
        opened = subprocess.run(
            nostream_sshd.ssh_argv("-M", "-N", "-f", "-S", str(path), "-o", "ControlPersist=no",
                                   "nostream"),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, timeout=30,
            check=False, start_new_session=True)
    assert opened.returncode == 0, log.read_text()
    try:
        yield path
    finally:
        nostream_sshd.run("-S", str(path), "-O", "exit", "nostream")
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_sshd_without_socket_forwarding_fails_the_socket_check_and_spares_the_master(
        nostream_sshd: Sshd, nvidia_smi: Install, runtime_dir: Path,  # noqa: F811
        users_master: Path) -> None:
    nvidia_smi("t4-idle")
    result = doctor(nostream_sshd, "nostream", "-o", f"ControlPath={users_master}")
    assert result.rc == 26, result.stdout + result.stderr
    checks = lines(result)
    assert f"your master at {users_master} is open: labhop rides it" in checks["ssh config"]
    assert "through your own master" in checks["login"]
    socket_line = checks["Unix socket"]
    assert socket_line.startswith("✗ Unix socket")
    assert "sshd refused to forward to a Unix socket" in socket_line
    assert "fix: labhop still works: it serves Jupyter on the remote's loopback TCP" in socket_line
    # Everything after it still ran over the same master.
    assert [checks[label][0] for label in ORDER[7:]] == ["✓", "✓", "✓", SKIP]
    # The refused channel did not take the user's master down, nor did labhop close it.
    check = nostream_sshd.run("-S", str(users_master), "-O", "check", "nostream")
    assert check.returncode == 0, check.stderr
    assert_nothing_stayed(runtime_dir, sessions_allowed=True)


def test_a_host_that_asks_a_password_asks_it_once(password_sshd: Sshd, askpass: Askpass,
                                                  runtime_dir: Path) -> None:
    result = run_labhop("doctor", "-F", str(password_sshd.config), "pwbox",
                        env_overrides=askpass.env(), timeout=120)
    checks = lines(result)
    assert "a new connection" in checks["login"], result.stdout + result.stderr
    # Every check after the login (the socket test's forward too) rides that one master.
    assert [checks[label][0] for label in ORDER[2:9]] == ["✓"] * 7, result.stdout
    assert askpass.count() == 1
    assert_nothing_stayed(runtime_dir)

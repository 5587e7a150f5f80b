"""scripts/slurm-setup replaces only a Slurm configuration it wrote itself (its --check,
on a temporary configuration directory; nothing on the machine is touched), and scripts/dev
demo installs only what the demo uses (scripts/dev run in a stand-in repository whose every
outside command is a stub that logs its call)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SLURM_SETUP = ROOT / "scripts" / "slurm-setup"
MARK = "# Written by labhop's scripts/slurm-setup; changes here are overwritten on the next run."


def check(conf_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SLURM_SETUP), "--check"], capture_output=True, text=True,
                          timeout=30, check=False,
                          env={**os.environ, "LABHOP_SLURM_CONF_DIR": str(conf_dir), **env})


@pytest.mark.parametrize(("files", "ok"), [
    ({}, True),  # a clean machine (CI)
    ({"slurm.conf": f"{MARK}\nClusterName=labhoptest\n",
      "gres.conf": "# Written by labhop's scripts/slurm-setup. A fake GPU\n"}, True),
    # Ours, with the first line edited away: it still names our cluster.
    ({"slurm.conf": "ClusterName=labhoptest\nSlurmUser=slurm\n"}, True),
    ({"slurm.conf": "# site config\nClusterName=hpc\n"}, False),
    ({"slurm.conf": f"{MARK}\nClusterName=labhoptest\n", "gres.conf": "NodeName=n1 Name=gpu\n"},
     False),
    # The mark must be the first line, not quoted somewhere in a site's file.
    ({"slurm.conf": f"ClusterName=hpc\n{MARK}\n"}, False),
])
def test_only_its_own_configuration_may_be_replaced(tmp_path: Path, files: dict[str, str],
                                                    ok: bool) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = check(tmp_path)
    assert result.returncode == (0 if ok else 1), result.stderr
    if not ok:
        [line] = result.stderr.splitlines()
        assert line.startswith(f"slurm-setup: {tmp_path}/")
        assert "not replacing this machine's Slurm configuration" in line
        assert line.endswith("To replace it anyway: LABHOP_SLURM_OVERWRITE=1 scripts/dev setup")
        assert check(tmp_path, LABHOP_SLURM_OVERWRITE="1").returncode == 0
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == files  # nothing written


# ---------------------------------------------------------------------------------------
# Each stub logs its name and arguments, one call a line. dpkg-query finds nothing installed
# (a clean machine).
STUB = """#!/bin/sh
printf '%s\\n' "$(basename "$0") $*" >>"$DEV_STUB_LOG"
"""
DEMO_PACKAGES = {"openssh-server", "python3-venv", "procps"}
TEST_PACKAGES = {"iproute2", "slurm-wlm", "munge", "chromium", "shellcheck"}


def write_stub(path: Path, *, fails: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STUB + ("exit 1\n" if fails else ""))
    path.chmod(0o755)


def run_dev(tmp_path: Path, *args: str, foreign_slurm_conf: bool
            ) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """scripts/dev ARGS in a copy of the repository's layout under tmp_path, and the calls it
    made; with `foreign_slurm_conf`, slurm-setup fails as it does on a machine with its own."""
    repo, bin_dir, log = tmp_path / "repo", tmp_path / "bin", tmp_path / "calls"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "dev", repo / "scripts" / "dev")
    write_stub(repo / "scripts" / "testbed-setup")
    write_stub(repo / "scripts" / "slurm-setup", fails=foreign_slurm_conf)
    for name in ("python", "pip"):  # the venv exists; labhop and the test tools do not yet
        write_stub(repo / ".venv" / "bin" / name)
    write_stub(bin_dir / "dpkg-query", fails=True)
    for name in ("apt-get", "python3"):
        write_stub(bin_dir / name)
    # For a developer who is not root: sudo runs its command. id stays the real one.
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    (bin_dir / "sudo").chmod(0o755)
    log.write_text("")
    result = subprocess.run(
        ["bash", str(repo / "scripts" / "dev"), *args], capture_output=True, text=True,
        timeout=30, check=False,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "DEV_STUB_LOG": str(log), "HOME": str(tmp_path)})
    calls = log.read_text().splitlines()
    return result, [call for call in calls if not call.startswith("dpkg-query ")]


def installed(calls: list[str]) -> set[str]:
    [install] = [call for call in calls if call.startswith("apt-get install ")]
    return {word for word in install.split()[2:] if not word.startswith("-")}


def test_the_demo_installs_only_what_it_uses_and_never_looks_at_slurm(tmp_path: Path) -> None:
    result, calls = run_dev(tmp_path, "demo", "gpubox", foreign_slurm_conf=True)
    assert result.returncode == 0, result.stderr
    assert installed(calls) == DEMO_PACKAGES
    assert "testbed-setup " in calls
    assert "pip install --quiet --disable-pip-version-check -e ." in calls
    assert calls[-1] == "python -m tests.testbed demo gpubox"
    # No Slurm, not even its --check, which would stop on this machine's own slurm.conf.
    assert [call for call in calls if "slurm" in call] == []


def test_setup_installs_everything_the_tests_use(tmp_path: Path) -> None:
    result, calls = run_dev(tmp_path, "setup", foreign_slurm_conf=False)
    assert result.returncode == 0, result.stderr
    assert calls[0] == "slurm-setup --check"  # before anything is installed
    assert installed(calls) == DEMO_PACKAGES | TEST_PACKAGES
    assert "testbed-setup lhtest lhtest2" in calls  # a test user per e2e worker
    assert "slurm-setup " in calls
    assert "pip install --quiet --disable-pip-version-check -e .[test]" in calls


def test_setup_stops_on_a_slurm_configuration_it_did_not_write(tmp_path: Path) -> None:
    result, calls = run_dev(tmp_path, "setup", foreign_slurm_conf=True)
    assert result.returncode == 1
    assert calls == ["slurm-setup --check"]


def test_test_sets_up_everything_first_on_a_clean_machine(tmp_path: Path) -> None:
    result, calls = run_dev(tmp_path, "test", foreign_slurm_conf=False)
    # The stubbed .venv has no ruff, so the run ends there, after the whole setup.
    assert result.returncode != 0
    assert installed(calls) == DEMO_PACKAGES | TEST_PACKAGES
    assert "slurm-setup " in calls

"""The sh files the remote scripts are made of: each one used, each clean under shellcheck."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from labhop.backends.base import entry_kinds
from labhop.remote import compose, jupyter, protocol, scripts

KINDS = entry_kinds()

SH_DIR = Path(compose.__file__).parent / "sh"
SH_FILES = sorted(SH_DIR.glob("*.sh"))


def test_every_file_in_labhop_sh_is_read_by_remote() -> None:
    on_disk = {path.name for path in SH_DIR.iterdir() if path.is_file()}
    assert on_disk == set(compose.SHELL_FILE_NAMES)


def test_every_sh_file_says_it_is_posix_sh() -> None:
    assert SH_FILES
    for path in SH_FILES:
        assert path.read_text().startswith("# shellcheck shell=sh\n"), path.name


def test_every_sh_file_is_in_some_script() -> None:
    request = jupyter.LaunchRequest(name="p", server_id="i", token="t" * 8)
    built = [
        scripts.launch_script(request, kinds=KINDS), scripts.status_script("p"),
        scripts.stop_script("p"), scripts.list_script(kinds=KINDS),
        scripts.owner_script("p", "c", "s", "t"),
        scripts.logs_script("p"), scripts.slurm_submit_script(request, (), kinds=KINDS),
        scripts.slurm_job_script(request), scripts.slurm_status_script("p"),
        scripts.slurm_stop_script("p"),
        scripts.gpus_script(protocol.Keys("GPU query script", frozenset()), gpu_fields="",
                           app_fields="", smi_timeout=1),
        scripts.doctor_script("check"),
    ]
    for path in SH_FILES:
        assert any(path.read_text() in script.text for script in built), path.name


def test_shellcheck_passes_on_every_sh_file() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        if os.environ.get("CI") == "true":
            pytest.fail("shellcheck is not installed; CI installs it (scripts/dev setup)")
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run([shellcheck, "-s", "sh", *map(str, SH_FILES)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

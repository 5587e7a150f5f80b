"""scripts/slurm-setup replaces only a Slurm configuration it wrote itself (its --check,
on a temporary configuration directory; nothing on the machine is touched)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SLURM_SETUP = Path(__file__).resolve().parents[2] / "scripts" / "slurm-setup"
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

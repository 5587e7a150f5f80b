"""A stand-in `nvidia-smi` that prints a recording from tests/data/nvidia-smi/.

There is no GPU on the test machines. The stand-in answers exactly the two queries labhop
makes (`labhop.gpus.GPU_FIELDS` and `APP_FIELDS`) with what the recorded machine printed,
and its exit status; any other arguments are an error, so a change to labhop's query that
the recordings do not cover fails loudly instead of being answered wrongly.
"""

from __future__ import annotations

from pathlib import Path

from labhop.gpus import APP_FIELDS, GPU_FIELDS

RECORDINGS = Path(__file__).parent / "data" / "nvidia-smi"
_END = "LABHOP_RECORDING_END"


def recording(case: str, query: str) -> str:
    """The recorded output of `query` ("query-gpu" or "query-compute-apps") for `case`."""
    return (RECORDINGS / case / f"{query}.out").read_text()


def recorded_status(case: str) -> int:
    path = RECORDINGS / case / "status"
    return int(path.read_text()) if path.exists() else 0


def script(case: str, *, apps: str | None = None) -> str:
    """The stand-in's text. `apps` replaces the recorded process list (a test that needs
    a real PID on a GPU says so where it calls this)."""
    gpu_out = recording(case, "query-gpu")
    apps_out = recording(case, "query-compute-apps") if apps is None else apps
    # Each heredoc needs its end marker on a line of its own.
    gpu_out, apps_out = (text if not text or text.endswith("\n") else text + "\n"
                         for text in (gpu_out, apps_out))
    assert _END not in gpu_out + apps_out
    expected = "--format=csv,noheader,nounits"
    return f"""#!/bin/sh
# labhop tests: NOT a real nvidia-smi. It prints a RECORDING of nvidia-smi's output on
# the machine '{case}' (tests/data/nvidia-smi/{case}), for labhop's two queries only.
case "$*" in
    "--query-gpu={GPU_FIELDS} {expected}")
        cat <<'{_END}'
{gpu_out}{_END}
        ;;
    "--query-compute-apps={APP_FIELDS} {expected}")
        cat <<'{_END}'
{apps_out}{_END}
        ;;
    *)
        echo "nvidia-smi stand-in (recording '{case}'): unexpected arguments: $*" >&2
        exit 2 ;;
esac
exit {recorded_status(case)}
"""


def install(path: Path, case: str, *, apps: str | None = None) -> Path:
    """Write the stand-in as `path/nvidia-smi` (mode 0755); returns its path."""
    path.mkdir(parents=True, exist_ok=True)
    target = path / "nvidia-smi"
    target.write_text(script(case, apps=apps))
    target.chmod(0o755)
    return target

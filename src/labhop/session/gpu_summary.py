"""The GPUs a start uses: `--gpus` checked against the host's GPUs before the launch, and
the compact table (and its one-line warning) shown once the server is ready.
"""

from __future__ import annotations

from dataclasses import dataclass

from labhop import gpus
from labhop.backends.base import Backend
from labhop.errors import LabhopError


def resolve_gpus(backend: Backend, spec: str, host: str) -> tuple[gpus.GpuChoice,
                                                                   gpus.GpuReport]:
    """`--gpus SPEC` checked against the GPUs the backend sees (NoGpusError names those
    that exist).

    Returns the choice (its CUDA_VISIBLE_DEVICES for the launch) and the report it was
    made from, which `gpu_summary` shows again once the server is ready.
    """
    selection = gpus.parse_gpu_selection(spec)
    if selection.kind == "none":
        return gpus.choose(selection, gpus.GpuReport(), host, spec), gpus.GpuReport()
    report = backend.gpus() or gpus.GpuReport(smi="missing")
    return gpus.choose(selection, report, host, spec), report


@dataclass(frozen=True)
class GpuSummary:
    """The compact table shown after start-up, and its one-line warning."""

    rows: list[list[str]]
    warning: str | None


def gpu_summary(backend: Backend, host: str,
                chosen: tuple[gpus.GpuChoice, gpus.GpuReport] | None) -> GpuSummary | None:
    """The GPUs a started server uses (all of them without --gpus); None to show nothing.

    Without --gpus (`chosen` None) a host without nvidia-smi or GPUs is normal (a CPU
    box), as is a backend whose GPUs are elsewhere (a job's node): nothing is shown, and
    no failure of this query may spoil a ready server.
    """
    if chosen is None:
        try:
            report = backend.gpus()
        except LabhopError:
            return None
        if report is None or gpus.problem(report, host):
            return None
        choice = gpus.GpuChoice("", report.gpus)
    else:
        choice, report = chosen
    if not choice.gpus:
        return None
    return GpuSummary(gpus.gpu_rows(report, choice.gpus),
                      gpus.warning_line(report, choice.gpus))

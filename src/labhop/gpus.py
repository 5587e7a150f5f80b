"""GPUs on the remote: the nvidia-smi query script, its parser, `--gpus`, and table rows.

Pure functions: text in, data or text out (the CLI prints, `commands` runs the script).
nvidia-smi is asked in its machine-readable CSV form, never scraped from its table:

    nvidia-smi --query-gpu=FIELDS --format=csv,noheader,nounits
    -> "0, GPU-6513270e-..., NVIDIA A100-SXM4-80GB, 78213, 81920, 100, 67"

Values nvidia-smi cannot give are bracketed: `[N/A]` (utilisation under MIG),
`[Not Supported]`, `[Not Found]` and `[Insufficient Permissions]` (other users'
processes seen from a container). They all become None (or "" for a name).

"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from labhop.errors import ConfigError, NoGpusError

GPU_FIELDS = "index,uuid,name,memory.used,memory.total,utilization.gpu,temperature.gpu"


APP_FIELDS = "gpu_uuid,pid,process_name,used_gpu_memory"


# A GPU that fell off the bus can make nvidia-smi hang; give up on it after this long.
SMI_TIMEOUT_S = 30


# When the one-line warning after start-up speaks up.
NEARLY_FULL_PCT = 90


BUSY_PCT = 50


# CUDA numbers devices fastest first unless told otherwise; nvidia-smi numbers them by
# PCI bus. `--gpus 1` means nvidia-smi's GPU 1, so the launch also sets
# CUDA_DEVICE_ORDER=PCI_BUS_ID (see launch.sh in labhop/sh).
HIDE_ALL = "-1"  # CUDA_VISIBLE_DEVICES value that hides every GPU (CUDA stops at -1)


GPU_HEADERS = ["GPU", "NAME", "MEMORY", "UTIL", "TEMP", "PROCESSES"]


BAR_WIDTH = 10


@dataclass(frozen=True)
class Gpu:
    """One line of `nvidia-smi --query-gpu`."""

    index: int
    uuid: str
    name: str
    memory_used_mib: int | None
    memory_total_mib: int | None
    utilization_pct: int | None
    temperature_c: int | None

    @property
    def memory_free_mib(self) -> int | None:
        if self.memory_used_mib is None or self.memory_total_mib is None:
            return None
        return max(self.memory_total_mib - self.memory_used_mib, 0)


@dataclass(frozen=True)
class GpuProcess:
    """One line of `nvidia-smi --query-compute-apps`, plus who runs it (from /proc)."""

    gpu_uuid: str
    pid: int
    process_name: str  # "" when nvidia-smi could not see it (another user's, a container)
    used_memory_mib: int | None
    user: str = ""
    server: str = ""  # the labhop server whose kernel (or child) this is, if any


@dataclass(frozen=True)
class GpuReport:
    """What the query script found on the host."""

    gpus: tuple[Gpu, ...] = ()
    processes: tuple[GpuProcess, ...] = ()
    user: str = ""  # the remote user we are: their processes are not "other users'"
    smi: str = "ok"  # "ok", "missing" (no nvidia-smi), "failed" (it exited non-zero)
    message: str = ""  # nvidia-smi's first line when it failed

    def on(self, gpu: Gpu) -> list[GpuProcess]:
        return [p for p in self.processes if p.gpu_uuid == gpu.uuid]

    def as_json(self) -> list[dict[str, object]]:
        return [{**asdict(gpu), "processes": [asdict(p) for p in self.on(gpu)]}
                for gpu in self.gpus]


# Parsing nvidia-smi's CSV
def _value(text: str) -> str | None:
    """A field's text, or None for nvidia-smi's bracketed 'not available' forms."""
    text = text.strip()
    return None if not text or (text.startswith("[") and text.endswith("]")) else text


def _number(text: str) -> int | None:
    value = _value(text)
    if value is None:
        return None
    try:
        return round(float(value))
    except ValueError:
        return None


def _split(line: str, left: int, right: int) -> list[str] | None:
    """`left` fields from the start and `right` from the end; the middle one may hold ', '.

    Names (GPU models, process paths) are the only fields that could contain the separator.
    """
    head = line.split(", ", left)
    if len(head) <= left:
        return None
    tail = head[left].rsplit(", ", right)
    if len(tail) <= right:
        return None
    return [*head[:left], *tail]


def parse_gpus(text: str) -> list[Gpu]:
    """`--query-gpu=GPU_FIELDS` output -> GPUs; lines that are not GPU rows are skipped."""
    gpus = []
    for line in text.splitlines():
        fields = _split(line.strip(), 2, 4)
        if fields is None or not fields[0].strip().isdigit():
            continue
        index, uuid, name, used, total, util, temp = fields
        gpus.append(Gpu(
            index=int(index),
            uuid=uuid.strip(),
            name=name.strip(),
            memory_used_mib=_number(used),
            memory_total_mib=_number(total),
            utilization_pct=_number(util),
            temperature_c=_number(temp),
        ))
    return gpus


def parse_processes(text: str) -> list[GpuProcess]:
    """`--query-compute-apps=APP_FIELDS` output -> processes (user and server left empty).

    nvidia-smi prints a process name as it is, line breaks too: a row cut short (no
    memory field yet) goes on over the lines that follow until one completes it, so
    such a name comes back whole instead of as a row of its own.
    """
    processes = []
    pending = ""
    for line in text.split("\n"):
        candidate = f"{pending}\n{line}" if pending else line
        fields = _split(candidate.strip(), 2, 1)
        if fields is not None and fields[1].strip().isdigit() and _is_memory(fields[3]):
            uuid, pid, name, memory = fields
            processes.append(GpuProcess(
                gpu_uuid=uuid.strip(),
                pid=int(pid),
                process_name=_value(name) or "",
                used_memory_mib=_number(memory),
            ))
            pending = ""
        elif pending or _row_start(line):
            pending = candidate
    return processes


def _is_memory(text: str) -> bool:
    text = text.strip()
    return text.isdigit() or (text.startswith("[") and text.endswith("]"))


def _row_start(line: str) -> bool:
    """Whether `line` opens a process row: 'GPU-..., PID, ' (or MIG-...)."""
    head = line.strip().split(", ", 2)
    return (len(head) == 3 and head[0].startswith(("GPU-", "MIG-"))
            and head[1].strip().isdigit())


def problem(report: GpuReport, host: str) -> str | None:
    """The one line to say when there is no GPU to show; None when there are GPUs."""
    if report.smi == "missing":
        return (f"{host} has no nvidia-smi: no NVIDIA driver is installed there, or "
                "nvidia-smi is not on the login PATH")
    if report.smi == "failed" and "no devices were found" not in report.message.lower():
        return f"nvidia-smi failed on {host}: {report.message or 'no message'}"
    if not report.gpus:
        return f"nvidia-smi on {host} finds no GPU"
    return None


def require_gpus(report: GpuReport, host: str) -> tuple[Gpu, ...]:
    message = problem(report, host)
    if message:
        raise NoGpusError(message)
    return report.gpus


# --gpus
@dataclass(frozen=True)
class GpuSelection:
    """A parsed `--gpus` value: "all", "none", "auto", or a list of indices and UUIDs."""

    kind: str
    items: tuple[str, ...] = ()


@dataclass(frozen=True)
class GpuChoice:
    """What the server gets: CUDA_VISIBLE_DEVICES ("" leaves it alone) and those GPUs."""

    cuda_visible_devices: str
    gpus: tuple[Gpu, ...]


GPUS_SYNTAX = ("auto (the GPU with the most free memory), all, none, an index like 1, a list "
               "like 0,2, or GPU UUIDs (GPU-...)")


def parse_gpu_selection(text: str) -> GpuSelection:
    """Check a `--gpus` value's form (no host needed); ConfigError names the forms."""
    word = text.strip().lower()
    if word in ("auto", "all", "none"):
        return GpuSelection(word)
    items = tuple(item.strip() for item in text.split(","))
    for item in items:
        if not (item.isdigit() or item.upper().startswith(("GPU-", "MIG-"))):
            raise ConfigError(f"bad --gpus {text!r}: use {GPUS_SYNTAX}")
    # Repeating a GPU would make CUDA stop at the repeat; keep the first of each.
    return GpuSelection("list", tuple(dict.fromkeys(items)))


def pick_auto(gpus: Sequence[Gpu]) -> Gpu:
    """The GPU with the most free memory; on a tie the lowest index."""
    def key(gpu: Gpu) -> tuple[int, int]:
        free = gpu.memory_free_mib
        return (-1 if free is None else free, -gpu.index)

    return max(gpus, key=key)


def describe_gpus(gpus: Sequence[Gpu]) -> str:
    """'0-7 NVIDIA A100-SXM4-80GB' or '0 NVIDIA RTX A6000, 1 NVIDIA GeForce RTX 3090'."""
    runs: list[list[Gpu]] = []
    for gpu in sorted(gpus, key=lambda g: g.index):
        if runs and runs[-1][-1].name == gpu.name and runs[-1][-1].index + 1 == gpu.index:
            runs[-1].append(gpu)
        else:
            runs.append([gpu])
    parts = []
    for run in runs:
        span = str(run[0].index) if len(run) == 1 else f"{run[0].index}-{run[-1].index}"
        parts.append(f"{span} {run[0].name}")
    return ", ".join(parts)


def _match(item: str, gpus: Sequence[Gpu], spec: str, host: str) -> Gpu | None:
    """The GPU an index or a UUID (or its unique prefix, as CUDA takes it) names."""
    if item.upper().startswith("MIG-"):
        return None  # a MIG slice: nvidia-smi's GPU list does not name them, CUDA checks
    if item.isdigit():
        found = [gpu for gpu in gpus if gpu.index == int(item)]
    else:
        found = [gpu for gpu in gpus if gpu.uuid.lower().startswith(item.lower())]
    if len(found) == 1:
        return found[0]
    if item.isdigit():
        what = f"{host} has no GPU {item}"
    elif found:
        what = f"{item} matches {len(found)} GPUs on {host}; give more of the UUID"
    else:
        what = f"no GPU on {host} has the UUID {item}"
    raise NoGpusError(f"--gpus {spec}: {what}; its GPUs: {describe_gpus(gpus)}")


def choose(selection: GpuSelection, report: GpuReport, host: str, spec: str) -> GpuChoice:
    """Resolve `--gpus` against the host's GPUs; NoGpusError names the GPUs that exist."""
    if selection.kind == "none":
        return GpuChoice(HIDE_ALL, ())
    gpus = require_gpus(report, host)
    if selection.kind == "all":
        return GpuChoice("", gpus)
    if selection.kind == "auto":
        best = pick_auto(gpus)
        return GpuChoice(str(best.index), (best,))
    chosen = [(item, _match(item, gpus, spec, host)) for item in selection.items]
    if all(item.isdigit() for item, _ in chosen):
        value = ",".join(item for item, _ in chosen)
    else:
        # CUDA takes indices or UUIDs, not a mix: name every GPU by its UUID then.
        value = ",".join(gpu.uuid if gpu else item for item, gpu in chosen)
    return GpuChoice(value, tuple(gpu for _, gpu in chosen if gpu is not None))


# What the table and the warning show
def gib(mib: int | None) -> str:
    return "?" if mib is None else f"{mib / 1024:.1f}"


def memory_bar(used_mib: int | None, total_mib: int | None, width: int = BAR_WIDTH) -> str:
    """'█████░░░░░ 21.3/40.0 GiB'."""
    if used_mib is None or not total_mib:
        return f"{'?' * width} {gib(used_mib)}/{gib(total_mib)} GiB"
    filled = min(width, max(0, round(used_mib / total_mib * width)))
    return f"{'█' * filled}{'░' * (width - filled)} {gib(used_mib)}/{gib(total_mib)} GiB"


def _pct(value: int | None) -> str:
    return "n/a" if value is None else f"{value} %"


def _temp(value: int | None) -> str:
    return "n/a" if value is None else f"{value} °C"


def process_text(process: GpuProcess) -> str:
    """'alice 2291847 python 76.4 GiB', plus "server 'proj'" for a labhop kernel."""
    name = os.path.basename(process.process_name) or "?"
    memory = "? GiB" if process.used_memory_mib is None else (
        f"{gib(process.used_memory_mib)} GiB")
    text = f"{process.user or '?'} {process.pid} {name} {memory}"
    return f"{text} server '{process.server}'" if process.server else text


def gpu_rows(report: GpuReport, gpus: Sequence[Gpu] | None = None) -> list[list[str]]:
    """One row per GPU (all, or `gpus`) under GPU_HEADERS; processes one per line."""
    rows = []
    for gpu in report.gpus if gpus is None else gpus:
        processes = "\n".join(process_text(p) for p in report.on(gpu)) or "-"
        rows.append([str(gpu.index), gpu.name,
                     memory_bar(gpu.memory_used_mib, gpu.memory_total_mib),
                     _pct(gpu.utilization_pct), _temp(gpu.temperature_c), processes])
    return rows


def nearly_full_or_busy(gpu: Gpu, processes: Sequence[GpuProcess] = (),
                        me: str = "") -> str | None:
    """'GPU 1 is nearly full (22.3/24.0 GiB used), busy (94 %), used by alice'; or None."""
    reasons = []
    used, total = gpu.memory_used_mib, gpu.memory_total_mib
    if used is not None and total and used * 100 >= total * NEARLY_FULL_PCT:
        reasons.append(f"nearly full ({gib(used)}/{gib(total)} GiB used)")
    if gpu.utilization_pct is not None and gpu.utilization_pct >= BUSY_PCT:
        reasons.append(f"busy ({gpu.utilization_pct} %)")
    # Only users /proc named: an unnamed process may be anyone's, even our own.
    others = sorted({p.user for p in processes if p.user and p.user != me})
    if others:
        reasons.append(f"used by {', '.join(others)}")
    return f"GPU {gpu.index} is {', '.join(reasons)}" if reasons else None


def warning_line(report: GpuReport, gpus: Sequence[Gpu]) -> str | None:
    """One line for every GPU the server uses that is nearly full or busy; None if none."""
    found = [nearly_full_or_busy(gpu, report.on(gpu), report.user) for gpu in gpus]
    flagged = [text for text in found if text]
    return "; ".join(flagged) if flagged else None

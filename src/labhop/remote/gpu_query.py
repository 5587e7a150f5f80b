"""The GPU query: the sh script that asks nvidia-smi, and the report read from what it prints.

The script is gpus.sh, with the prelude and quoting of every script, so it speaks the same
`labhop:` protocol. Pure: text in, a `gpus.GpuReport` out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from labhop.gpus import (
    APP_FIELDS,
    GPU_FIELDS,
    SMI_TIMEOUT_S,
    GpuProcess,
    GpuReport,
    parse_gpus,
    parse_processes,
)
from labhop.remote import compose, protocol, scripts


def query_script() -> compose.Script:
    """The sh script that asks nvidia-smi about GPUs and processes (see `parse_report`)."""
    return scripts.gpus_script(QUERY_KEYS, gpu_fields=GPU_FIELDS, app_fields=APP_FIELDS,
                              smi_timeout=SMI_TIMEOUT_S)


# What the query script prints (see protocol.parse_output): one line per GPU, per process,
# and per /proc lookup.
QUERY_KEYS = protocol.Keys(
    "GPU query script",
    single=frozenset(("user", "nvidia-smi", "status", "message", "error", "exit")),
    lists=frozenset(("gpu", "app", "owner", "sid", "server")),
)


def _pairs(values: Iterable[str], *, strip: bool = True) -> dict[str, str]:
    """'KEY REST' values -> {KEY: REST}; `strip=False` keeps REST exactly (a name)."""
    pairs = {}
    for value in values:
        key, _, rest = value.partition(" ")
        if key and rest:
            pairs[key] = rest.strip() if strip else rest
    return pairs


def parse_report(stdout: str) -> GpuReport:
    """The query script's output -> GPUs, and processes with their user and server."""
    output = protocol.parse_output(stdout, QUERY_KEYS)
    user = output.get("user")
    state = output.get("nvidia-smi")
    if state in ("missing", "failed"):
        return GpuReport(user=user, smi=state, message=output.get("message"))
    gpus = parse_gpus("\n".join(output.multi["gpu"]))
    owners = _pairs(output.multi["owner"])
    ids = _pairs(output.multi["sid"])
    servers = _pairs(output.multi["server"], strip=False)
    processes = [
        attribute(p, owners, ids, servers)
        for p in parse_processes("\n".join(output.multi["app"]))
    ]
    return GpuReport(gpus=tuple(gpus), processes=tuple(processes), user=user)


def attribute(process: GpuProcess, owners: dict[str, str], ids: dict[str, str],
              servers: dict[str, str]) -> GpuProcess:
    """Fill in the user and labhop server of a GPU process from what /proc said.

    When nvidia-smi itself could not name the process, its PID is not one of this
    machine's /proc (a container sees other PIDs), so /proc would name a stranger.
    """
    if not process.process_name:
        return process
    pid = str(process.pid)
    return replace(process, user=owners.get(pid, ""),
                   server=servers.get(ids.get(pid, ""), ""))

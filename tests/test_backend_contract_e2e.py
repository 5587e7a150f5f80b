"""The contract every backend keeps, run against each registered one for real: the host
through the loopback sshd, Slurm through the one-node test cluster. A new backend
(PBS, Kubernetes) is registered in `backends.BACKENDS` and must pass this file as is."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from labhop import model
from labhop.backends.base import BACKENDS, Backend, BackendOptions, backend_for_entry, backend_kind
from labhop.remote import jupyter
from labhop.ssh.connection import connected
from labhop.ssh.target import Target
from tests.testbed import Sshd, user_processes

pytestmark = pytest.mark.e2e

# What each backend needs beyond the server itself (the test cluster's GPU partition).
OPTIONS = {"slurm": BackendOptions(sbatch_args=("-p", "gpu", "-t", "00:10:00"))}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, sshd: Sshd) -> Iterator[Backend]:
    if request.param == "slurm":
        request.getfixturevalue("slurm")  # skips (fails in CI) without the test cluster
    with connected(Target("gpubox", config_file=str(sshd.config))) as conn:
        yield BACKENDS[request.param](conn, OPTIONS.get(request.param))


def launch_request(kind: str) -> jupyter.LaunchRequest:
    return jupyter.LaunchRequest(
        name="contract", server_id=secrets.token_hex(8), token=secrets.token_hex(24),
        app="server", env=model.EnvSpec("venv", "~/jvenv"),
        record={"name": "contract", "backend": kind, "app": "server"})


def test_a_backend_launches_reports_lists_and_stops(backend: Backend) -> None:
    assert BACKENDS[backend.kind] is type(backend)
    server = backend.launch(launch_request(backend.kind))
    assert (server.name, server.existing) == ("contract", False)
    assert server.endpoint.partition(":")[0] in ("unix", "tcp")
    assert backend.where(server)

    again = backend.launch(launch_request(backend.kind))
    assert again.existing and again.token == server.token

    assert backend.status("contract").alive
    assert backend.health(server).alive
    [entry], _ = backend.list()
    assert entry.name == "contract" and entry.token == ""
    # Every command finds the backend that runs a server from its state record.
    assert backend_kind(entry) == backend.kind
    assert type(backend_for_entry(backend.conn, entry)) is type(backend)
    assert backend.find("contract", with_token=True).token == server.token
    assert backend.logs("contract", lines=50) is not None

    assert backend.stop("contract").get("known") == "1"
    assert not backend.status("contract").alive
    assert backend.list() == ([], [])
    assert backend.logs("contract", lines=5) is None
    assert server_processes_left() == []


def server_processes_left(timeout: float = 15) -> list[str]:
    """lhtest's processes but the sshd of the connection this test still holds."""
    deadline = time.monotonic() + timeout
    while True:
        left = [cmd for _, cmd in user_processes() if not cmd.startswith("sshd:")]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)

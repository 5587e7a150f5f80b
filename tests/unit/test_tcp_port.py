"""A TCP server's port: it picks its own (port 0), the launch learns it from the server's
runtime file (or its listening socket) through the PID it started, and writes the endpoint
only once every listener on that port is that PID's own. Run in sh against stand-ins for
Jupyter that listen as a real one does, and a stand-in neighbour that holds a port."""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
from pathlib import Path

from labhop import model
from labhop.remote import protocol
from tests.unit.test_remote_scripts import (
    alive,
    fake_venv,
    launch_script,
    request,
    run_sh,
    runtime_dir,
)

# Jupyter given --ServerApp.port=0: binds where the system puts it; its runtime file says
# so (json.dump with indent=2, as jupyter_server writes it). SAYS: what the file claims
# ("own": the real port, "0": an older server's 0, a number: a port it does not hold).
STAND_IN = """
import json, os, signal, socket, sys, time
says = sys.argv[1]
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
if says != "never":
    sock.listen()
port = {"own": sock.getsockname()[1], "never": sock.getsockname()[1]}.get(says)
os.makedirs(os.environ["JUPYTER_RUNTIME_DIR"], exist_ok=True)
path = os.path.join(os.environ["JUPYTER_RUNTIME_DIR"], f"jpserver-{os.getpid()}.json")
with open(path, "w") as f:
    json.dump({"port": int(says) if port is None else port, "root_dir": '"port": 1,'}, f,
              indent=2)
if says == "die":
    sys.exit(1)
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
time.sleep(60)
"""


def stand_in_jupyter(env: Path, says: str) -> None:
    fake_venv(env, with_jupyter=False)
    (env / "bin" / "jupyter-lab").write_text(
        f"#!/bin/sh\nexec {sys.executable} -c {shlex.quote(STAND_IN)} {shlex.quote(says)}\n")
    (env / "bin" / "python").write_text("#!/bin/sh\necho ServerApp tcp 0 0\n")
    for name in ("jupyter-lab", "python"):
        (env / "bin" / name).chmod(0o755)


def launch(home: Path, says: str, **overrides: object) -> protocol.ScriptOutput | str:
    """Launch the stand-in over TCP: what the script reported, or its error line."""
    stand_in_jupyter(home / "env", says)
    server_id = f"tcp{os.getpid()}{home.name}"[-16:]
    values: dict[str, object] = {"env": model.EnvSpec("venv", "~/env"), "transport": "tcp",
                                 "server_id": server_id, "port_wait": 3}
    values.update(overrides)
    result = run_sh(launch_script(request(**values)), home)
    if result.returncode != 0:
        return protocol.parse_failure(result.stdout).get("error")
    return protocol.parse_output(result.stdout, protocol.LAUNCH_KEYS)


def stop(fields: protocol.ScriptOutput) -> None:
    pid = int(fields.get("pid"))
    if alive(pid):
        os.kill(pid, 15)


def test_the_endpoint_is_the_port_the_server_chose(tmp_path: Path) -> None:
    fields = launch(tmp_path, "own")
    assert isinstance(fields, protocol.ScriptOutput)
    try:
        endpoint = fields.get("endpoint")
        host, _, port = endpoint.removeprefix("tcp:").rpartition(":")
        assert host == "127.0.0.1" and port.isdigit()
        runtime = runtime_dir(f"tcp{os.getpid()}{tmp_path.name}"[-16:])
        info = json.loads((runtime / f"jpserver-{fields.get('pid')}.json").read_text())
        assert int(port) == info["port"]
        # What a launch hands Jupyter: port 0, no port number on its command line.
        with open(f"/proc/{fields.get('pid')}/cmdline", "rb") as cmdline:
            assert f":{port}".encode() not in cmdline.read()
    finally:
        stop(fields)


def test_an_older_server_that_writes_port_0_is_found_by_its_socket(tmp_path: Path) -> None:
    fields = launch(tmp_path, "0")
    assert isinstance(fields, protocol.ScriptOutput)
    try:
        port = int(fields.get("endpoint").rpartition(":")[2])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the stand-in listens there
    finally:
        stop(fields)


def test_a_port_someone_else_listens_on_is_never_the_endpoint(tmp_path: Path) -> None:
    """The server's file names a port another process holds (a neighbour's squatter):
    no endpoint, the server stopped, and a line that says why."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        error = launch(tmp_path, str(port))
    assert isinstance(error, str)
    assert error.startswith(f"another process also listens on port {port}, which Jupyter "
                            "chose on ")
    assert error.endswith("labhop stopped the server; retry")
    state = tmp_path / ".local/state/labhop/servers/proj"
    assert not (state / "endpoint").exists() or not (state / "endpoint").read_text().strip()


def test_a_server_that_dies_before_it_listens_is_reported_exited(tmp_path: Path) -> None:
    fields = launch(tmp_path, "die")
    assert isinstance(fields, protocol.ScriptOutput)
    assert fields.get("exited") == "1"
    assert fields.get("endpoint") == ""


def test_a_server_that_never_listens_is_stopped_after_the_wait(tmp_path: Path) -> None:
    error = launch(tmp_path, "never", port_wait=1)
    assert isinstance(error, str)
    assert error.startswith("jupyter-lab did not listen within 1 s on ")
    assert error.endswith("labhop stopped it (raise --timeout if the host is slow)")

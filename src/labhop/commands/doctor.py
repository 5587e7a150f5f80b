"""`labhop doctor HOST`: checks, in order, everything labhop needs from here to Jupyter.

Each check is a small function that returns a `Check`: passed, failed (with what to do),
or not checked (an earlier check it needs failed, or it was not asked for). The pure ones
take what ssh or a remote script printed; `diagnose` runs them in order over one
connection (`connection.connected`, so a master it opened is closed at the end) and hands
each result over as soon as it is known. Nothing is started that stays: the remote steps
remove what they create, and the one listener lives only as long as its check.

"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from labhop import model, oscompat
from labhop.backends.base import run_and_parse
from labhop.backends.host import HostBackend
from labhop.commands.doctor_checks import (
    LABELS,
    Check,
    Report,
    config_check,
    env_check,
    failed,
    from_error,
    gpu_check,
    jupyter_check,
    login_check,
    parse_versions,
    partitions_of,
    script_error,
    setsid_check,
    shell_check,
    skipped,
    slurm_check,
    socket_check,
    split_advice,
    ssh_client_check,
    state_check,
)
from labhop.errors import ExitStatus, LabhopError, LocalPortError
from labhop.model import DEFAULT_APP
from labhop.remote import protocol, scripts
from labhop.ssh import connection, control, ports, proc, transport
from labhop.ssh.connection import Connection
from labhop.ssh.target import Resolved, Target, resolve

PING = b"labhop doctor\n"


LISTENER_TIMEOUT_S = 30.0


PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class DoctorRequest:
    target: Target
    env: model.EnvSpec | None = None
    app: str = DEFAULT_APP
    slurm: tuple[str, ...] | None = None  # sbatch arguments; None: not a Slurm host
    gpus: str = ""  # --gpus (or the host's config): GPUs are then a check, not a note


# Running the checks
Emit = Callable[[Check], None]


def diagnose(request: DoctorRequest, emit: Emit = lambda _check: None) -> Report:
    """Every check, in order; each one is handed to `emit` as soon as it is known."""
    checks: list[Check] = []

    def add(check: Check) -> None:
        checks.append(check)
        emit(check)

    def skip_rest(why: str) -> Report:
        for name in LABELS:
            if name not in {check.name for check in checks}:
                add(skipped(name, why))
        return Report(request.target.host, tuple(checks))

    binary = shutil.which("ssh")
    add(ssh_client_check(binary, _ssh_version(binary) if binary else ""))
    if binary is None:
        return skip_rest("not checked: needs the ssh client")

    target = request.target
    try:
        resolved = resolve(target, binary)
    except LabhopError as exc:
        add(from_error("ssh-config", exc))
        return skip_rest("not checked: ssh cannot read its configuration")
    multiplex = target.multiplex and oscompat.supports_multiplexing()
    user_path = connection.user_control_path(resolved)
    user_master = multiplex and bool(user_path) and control.master_alive(binary, user_path,
                                                                     target.host)
    labhop_master = multiplex and not user_master and _labhop_master_alive(
        binary, resolved, target.host)
    add(config_check(resolved, multiplex=multiplex, user_path=user_path,
                     user_master=user_master, labhop_master=labhop_master))

    started = time.monotonic()
    logged_in = False
    try:
        with connection.connected(target) as conn:
            hello = run_and_parse(conn, scripts.doctor_script("hello"), "the first step")
            logged_in = True
            how = ("through your own master" if user_master
                   else "through labhop's open master" if labhop_master
                   else "a new connection" if conn.multiplex
                   else "one ssh per step")
            add(login_check(hello.get("user"), hello.get("host"),
                            time.monotonic() - started, how))
            _remote_checks(conn, request, add)
    except LabhopError as exc:
        if logged_in:
            raise
        add(from_error("login", exc))
        return skip_rest("not checked: needs a login")
    return Report(target.host, tuple(checks))


def _ssh_version(binary: str) -> str:
    """`ssh -V`'s line (OpenSSH prints it on stderr)."""
    result = proc.run([binary, "-V"], timeout=15)
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[0] if lines else ""


def _labhop_master_alive(binary: str, resolved: Resolved, host: str) -> bool:
    path = connection.shared_control_path(resolved)
    return path is not None and control.master_alive(binary, path, host)


def _remote_checks(conn: Connection, request: DoctorRequest, add: Emit) -> None:
    """Checks 4 to 11, over the connection."""
    host = request.target.host
    script = scripts.doctor_script("check", env=request.env, app=request.app,
                                  slurm=request.slurm is not None,
                                  local_home=os.path.expanduser("~"))
    try:
        output: protocol.ScriptOutput | None = run_and_parse(conn, script, "the check script")
    except LabhopError as exc:
        what, advice = split_advice(str(exc))
        add(failed("shell", f"the login shell did not run labhop's script: {what}",
                   advice if advice else f"check your login files with `ssh {host}`: they "
                   "must not exit, or wait for input", ExitStatus.REMOTE_FAILED))
        output = None
    if output is not None and not output.get("path"):
        failure = script_error(output, host)
        add(failed("shell", failure[1] if failure else "the check script printed no PATH",
                   "run again with --debug to see what the login shell printed",
                   ExitStatus.REMOTE_FAILED))
        output = None
    if output is None:
        for name in ("env", "jupyter", "unix-socket", "setsid", "state-dir"):
            add(skipped(name, "not checked: the login shell did not run labhop's script"))
        add(_gpus(conn, request))
        add(skipped("slurm", "not checked: the login shell did not run labhop's script")
            if request.slurm is not None else skipped("slurm", "not asked for (no --slurm)"))
        return
    add(shell_check(output))
    failure = script_error(output, host)
    add(env_check(request.env, failure, output.get("prefix")))
    jupyter = jupyter_check(request.app, failure, output.get("exe"),
                            parse_versions(output.multi["version"]))
    add(jupyter)
    python = output.get("py") or output.get("python3")
    probe = probe_socket(conn, python) if python else None
    add(socket_check(transport=output.get("transport"),
                     versions=parse_versions(output.multi["version"]),
                     jupyter_ok=jupyter.ok is True, probe=probe))
    add(setsid_check(output.get("setsid")))
    add(state_check(output))
    add(_gpus(conn, request))
    if request.slurm is None:
        add(skipped("slurm", "not asked for (no --slurm)"))
    else:
        add(slurm_check(output, partitions_of(request.slurm)))


def _gpus(conn: Connection, request: DoctorRequest) -> Check:
    if request.slurm is not None:
        return skipped("gpus", "not checked: with --slurm the GPUs are on the compute "
                               "nodes (ask for them with --gres=gpu:N)")
    try:
        report = HostBackend(conn).gpus()
    except LabhopError as exc:
        return from_error("gpus", exc)
    return gpu_check(report, request.target.host, request.gpus)


# The Unix-socket round trip
def probe_socket(conn: Connection, python: str) -> tuple[bool, str]:
    """Start a listener on a fresh private socket on the remote, forward a local port to
    it through the connection (as a launch's tunnel would), and send a line through.

    The forward is added only once the listener listens: a channel open that fails on a
    socket that is not there yet proves nothing. The listener ends when we close its
    stdin, and its script removes its directory.
    """
    try:
        return _probe_socket(conn, python)
    except LabhopError as exc:
        return False, f"the socket test failed: {exc}"


def _probe_socket(conn: Connection, python: str) -> tuple[bool, str]:
    script = scripts.doctor_script("listen", python=python)
    listener = conn.start_script(script, stdout=subprocess.PIPE)
    try:
        ready, lines = proc.lines_until(listener, "labhop:listening=1",
                                        timeout=LISTENER_TIMEOUT_S)
        output = protocol.parse_output(protocol.after_marker("\n".join(lines), script.marker),
                                       protocol.DOCTOR_LISTEN_KEYS)
        if not ready:
            error = output.get("error") or "it did not start"
            return False, f"could not start a test listener with {python}: {error}"
        try:
            tunnel = _forward(conn, output.get("sock"))
        except LabhopError as exc:
            return False, f"could not forward a local port to a test socket: {exc}"
        try:
            return _round_trip(tunnel.forwards[0][0])
        finally:
            tunnel.close()
    finally:
        proc.release(listener, timeout=10)


def _forward(conn: Connection, sock: str) -> transport.Tunnel:
    for _attempt in range(PORT_ATTEMPTS):
        try:
            return conn.transport.open_tunnel([(ports.any_free_port(), sock)])
        except LocalPortError:
            continue  # taken between choosing and binding
    raise LocalPortError("no free local port for the test forward")


def _round_trip(port: int) -> tuple[bool, str]:
    refused = (False, "sshd refused to forward to a Unix socket (AllowStreamLocalForwarding "
                      "no, or DisableForwarding, in its sshd_config)")
    data = b""
    try:
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as exc:
        return False, f"could not connect to the forward's local port {port}: {exc}"
    with client:
        try:
            client.sendall(PING)
            while not data.endswith(b"\n") and len(data) < 256:
                chunk = client.recv(256)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            return False, "no answer through the forward within 10 s"
        except OSError:
            # ssh closes (or resets) the local end when sshd refuses the channel.
            return refused
    return (True, "round trip ok") if data == b"pong " + PING else refused

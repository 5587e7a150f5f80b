"""How each step reaches the host: a client of a ControlMaster (`MuxTransport`) or, where
OpenSSH has no multiplexing (Windows, --no-multiplex), an ssh of its own per step
(`DirectTransport`); and the tunnels each opens. Builds ssh argv and runs it; never
composes remote shell text (a script brings its own bootstrap command) and knows nothing
about Jupyter.
"""

from __future__ import annotations

import abc
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from labhop.errors import ConfigError, LocalPortError, SSHError
from labhop.ssh import proc
from labhop.ssh.control import cancel_forward, control_argv, master_alive, master_pid
from labhop.ssh.failures import _PORT_FAILURE, _last_line, classify_failure, taken_local_port
from labhop.ssh.target import CONNECT_TIMEOUT_S, Resolved, Target, default_options, describe

# What the tunnel's LocalCommand prints once ssh listens on the local port: the one proof
# that *our* ssh holds that port (it runs only after every -L was bound; with
# ExitOnForwardFailure a port someone else holds ends ssh instead).
TUNNEL_READY = "labhop:tunnel-ready"


# One forward of a tunnel: (local port on 127.0.0.1, remote end: a socket path or host:port).
Forward = tuple[int, str]


def forward_spec(forward: Forward) -> str:
    """The `-L` argument of one forward; the local end is on loopback only."""
    local_port, remote = forward
    return f"127.0.0.1:{local_port}:{remote}"


class RemoteScript(Protocol):
    """What a transport runs: the text it sends on ssh's stdin and the constant command
    the remote login shell runs to read it (`remote.compose.Script` is one)."""

    @property
    def text(self) -> str: ...

    @property
    def command(self) -> str: ...


class Tunnel(abc.ABC):
    """A set of `-L 127.0.0.1:PORT:REMOTE` forwards of labhop's, opened together, and the
    guard that removes them when labhop is gone, however labhop died (see `labhop.ssh.guard`).

    The token goes to a local port of the set only while `holds()` is true: while
    labhop's own ssh listens there, no other program can.
    """

    def __init__(self, guard: subprocess.Popen[str], forwards: Sequence[Forward]) -> None:
        self.guard = guard
        self.forwards = tuple(forwards)

    @abc.abstractmethod
    def holds(self) -> bool:
        """Whether labhop's own ssh listens on every local port of the set right now."""

    def close(self) -> None:
        proc.release(self.guard, timeout=15)


class ChildTunnel(Tunnel):
    """A supervised `ssh -N -L ... -L ...` child (the guard runs it): it holds every port
    of the set while it runs."""

    def holds(self) -> bool:
        return self.guard.poll() is None


class MasterForward(Tunnel):
    """Forwards the master holds (`ssh -O forward`); its guard cancels exactly them.

    They hold their ports while the master that took them is alive: a master that died
    gave the ports up, and a new master at the same control path (another labhop's)
    never took them.
    """

    def __init__(self, guard: subprocess.Popen[str], forwards: Sequence[Forward], *,
                 ssh: str, control_path: str, host: str, master_pid: int) -> None:
        super().__init__(guard, forwards)
        self._check = control_argv(ssh, control_path, "check", host)
        self.master_pid = master_pid

    def holds(self) -> bool:
        return self.guard.poll() is None and master_pid(self._check) == self.master_pid


class Transport(abc.ABC):
    """How each step reaches the host. Knows ssh flags, never shell syntax or Jupyter."""

    multiplexed = False

    def __init__(self, target: Target, resolved: Resolved, ssh: str, log_dir: Path) -> None:
        self.target = target
        self.resolved = resolved
        self.ssh = ssh
        self.log_dir = log_dir

    def describe(self) -> str:
        return describe(self.target, self.resolved)

    @abc.abstractmethod
    def is_alive(self) -> bool:
        """Whether the connection the steps use is up."""

    @abc.abstractmethod
    def step_argv(self, *extra: str) -> list[str]:
        """The ssh argv of one step, `extra` options before the host."""

    def _failure(self, stderr: str) -> SSHError | ConfigError:
        return classify_failure(stderr, host=self.target.host, who=self.describe())

    def run_script(self, script: RemoteScript, *,
                   timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a POSIX sh script on the remote, sent on stdin. Returns the raw result.

        `login` runs it in the user's login environment (PATH, modules, conda), which
        only steps that start or look for programs need.
        """
        argv = [*self.step_argv("-T"), script.command]
        try:
            # A step of its own may ask for a password, on the terminal; a mux client never
            # asks, so it runs out of reach of the terminal's Ctrl+C.
            result = proc.run(argv, input_text=script.text, timeout=timeout,
                              new_session=self.multiplexed)
        except subprocess.TimeoutExpired as exc:
            raise SSHError(
                f"{self.target.host} did not finish a step within {timeout:.0f} s; the host "
                "or its file system may be overloaded (retry, or see --debug)"
            ) from exc
        if result.returncode == 255:
            raise self._failure(result.stderr)
        return result

    def start_script(self, script: RemoteScript, *,
                     stdout: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
        """Run a script that lives as long as we hold its stdin open (see `proc.spawn`)."""
        return proc.spawn([*self.step_argv("-T"), script.command], stdin_text=script.text,
                          stdout=stdout, detached=self.multiplexed)

    @abc.abstractmethod
    def open_tunnel(self, forwards: Sequence[Forward]) -> Tunnel:
        """Forward each 127.0.0.1:PORT to its remote end (a socket path or host:port), all
        or none: a port that cannot be had raises LocalPortError naming it (`.port`)."""

    def _port_error(self, local_port: int, stderr: str) -> LocalPortError:
        return LocalPortError(f"cannot listen on 127.0.0.1:{local_port}: "
                              f"{_last_line(stderr) or 'port forwarding failed'}",
                              port=local_port)


class MuxTransport(Transport):
    """Every step is a client of one ControlMaster: no login, no prompt, no handshake."""

    multiplexed = True

    def __init__(self, target: Target, resolved: Resolved, ssh: str, log_dir: Path, *,
                 control_path: Path | str) -> None:
        super().__init__(target, resolved, ssh, log_dir)
        self.control_path = str(control_path)

    def is_alive(self) -> bool:
        return master_alive(self.ssh, self.control_path, self.target.host)

    def step_argv(self, *extra: str) -> list[str]:
        # BatchMode: a mux client must never prompt (it has no terminal); if the master
        # is gone it fails fast instead of hanging on a password prompt. The user's
        # LocalForward/RemoteCommand lines are for their own sessions, not for ours.
        return [self.ssh, "-S", self.control_path, "-o", "ControlMaster=no",
                "-o", "BatchMode=yes",
                "-o", "ClearAllForwardings=yes", "-o", "RemoteCommand=none",
                *self.target.user_args(), *extra, "--", self.target.host]

    def open_tunnel(self, forwards: Sequence[Forward]) -> Tunnel:
        # The master holds the listeners: `-O forward` returns 0 only once it is bound.
        # (A `-O proxy` client holding its own listener would be neater, but OpenSSH 9.2's
        # master dies with "no remote_id" when such a client leaves after a failed
        # channel open, which would end every labhop on the connection.) One spec per
        # call, so a failure names its port.
        added: list[str] = []
        for forward in forwards:
            spec = forward_spec(forward)
            command = control_argv(self.ssh, self.control_path, "forward", self.target.host)
            result = proc.run([*command[:-2], "-L", spec, *command[-2:]], timeout=30)
            if result.returncode != 0:
                # All or none: give back what this call added before the one that failed.
                for done in added:
                    cancel_forward(ssh=self.ssh, control_path=self.control_path, spec=done,
                                   host=self.target.host)
                if not master_pid(self._check_argv()):
                    raise self._failure(result.stderr)
                raise self._port_error(forward[0], result.stderr)
            added.append(spec)
        pid = master_pid(self._check_argv())
        # One guard for the whole set: it cancels exactly these forwards, each of them.
        cancels = [arg for spec in added for arg in (
            "--cancel-forward", self.ssh, self.control_path, spec, self.target.host)]
        guard = proc.spawn(proc.guard_argv((), *cancels),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return MasterForward(guard, forwards, ssh=self.ssh, control_path=self.control_path,
                             host=self.target.host, master_pid=pid)

    def _check_argv(self) -> list[str]:
        return control_argv(self.ssh, self.control_path, "check", self.target.host)


class DirectTransport(Transport):
    """No ControlMaster (Windows' OpenSSH, --no-multiplex): each step is an ssh of its
    own, and the tunnel is one long-lived `ssh -N -L` that labhop supervises."""

    def __init__(self, target: Target, resolved: Resolved, ssh: str, log_dir: Path) -> None:
        super().__init__(target, resolved, ssh, log_dir)
        self._opened = 0  # tunnels opened so far: each gets a log file of its own

    def is_alive(self) -> bool:
        # There is no connection between steps; the tunnel's own keep-alives tell.
        return True

    def _direct_argv(self, *extra: str) -> list[str]:
        return [self.ssh, "-o", "ControlMaster=no", "-o", "ControlPath=none",
                *self.target.user_args(), *default_options(self.resolved), *extra,
                "--", self.target.host]

    def step_argv(self, *extra: str) -> list[str]:
        return self._direct_argv("-o", "ClearAllForwardings=yes",
                                 "-o", "RemoteCommand=none", *extra)

    def tunnel_argv(self, *specs: str) -> list[str]:
        # Never -f: it does not background on Windows, and a foreground child is what
        # labhop supervises. LocalCommand runs only once every -L is bound, so its line
        # is the proof that this ssh holds the ports. (ClearAllForwardings would clear
        # these -L too, so the LocalForward lines of the user's config for this host are
        # opened as well.)
        forwards = [arg for spec in specs for arg in ("-L", spec)]
        return self._direct_argv("-N", "-o", "ExitOnForwardFailure=yes",
                                 "-o", "PermitLocalCommand=yes",
                                 "-o", f"LocalCommand=echo {TUNNEL_READY}", *forwards)

    def open_tunnel(self, forwards: Sequence[Forward]) -> Tunnel:
        self._opened += 1
        log_path = self.log_dir / f"tunnel-{self._opened}.log"
        # In the terminal's foreground: it logs in itself, and may have to ask.
        child = proc.spawn_guarded(self.tunnel_argv(*map(forward_spec, forwards)),
                                   stderr_path=log_path, detached=False)
        timeout = CONNECT_TIMEOUT_S + 30
        if proc.wait_for_line(child, TUNNEL_READY, timeout=timeout):
            return ChildTunnel(child, forwards)
        timed_out = child.poll() is None
        proc.release(child, timeout=5)
        stderr = log_path.read_text(encoding="utf-8", errors="replace")
        if _PORT_FAILURE.search(stderr):
            ports = [port for port, _ in forwards]
            taken = taken_local_port(stderr, ports)
            raise self._port_error(ports[0] if taken is None else taken, stderr)
        if timed_out:
            raise SSHError(f"the tunnel to {self.target.host} did not come up within "
                           f"{timeout:.0f} s; check the network and retry")
        raise self._failure(stderr)

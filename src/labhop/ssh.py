"""Drives the system OpenSSH client: master connections, scripts, tunnels, failures.

Two transports carry every step: a client of a ControlMaster (`MuxTransport`), or, where
OpenSSH has no multiplexing (Windows, --no-multiplex), an ssh of its own per step
(`DirectTransport`). Which master to use, and for how long, is `connection`'s job. This
module builds ssh argv and runs it; it never composes remote shell text (that is
`remote`'s job) and knows nothing about Jupyter.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from labhop import proc
from labhop.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    HostKeyError,
    HostUnknownError,
    LocalPortError,
    SSHError,
    SSHMissingError,
)
from labhop.remote import REMOTE_LOGIN_BOOTSTRAP, REMOTE_PLAIN_BOOTSTRAP

_LOGGER = logging.getLogger(__name__)

# REMOTE_LOGIN_BOOTSTRAP / REMOTE_PLAIN_BOOTSTRAP: the command each step's ssh runs; like
# every other piece of shell text labhop sends, remote.py writes it.

# Options labhop sets unless ssh_config already chose a value (seen through `ssh -G`).
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_COUNT = 3
CONNECT_TIMEOUT_S = 20


@dataclass(frozen=True)
class Target:
    """Where to connect, as the user named it, plus the ssh options they passed through."""

    host: str
    config_file: str | None = None
    jump: str | None = None
    identity_files: tuple[str, ...] = ()
    login: str | None = None
    port: int | None = None
    options: tuple[str, ...] = ()
    # How labhop reaches it: one shared ControlMaster (never on Windows), kept open this
    # many seconds after the last labhop for it exits (--no-multiplex, --persist).
    multiplex: bool = True
    persist_s: int = 0

    def user_args(self) -> list[str]:
        """The pass-through options in ssh's own syntax (they win over ssh_config)."""
        args: list[str] = []
        if self.config_file:
            args += ["-F", self.config_file]
        if self.jump:
            args += ["-J", self.jump]
        for identity in self.identity_files:
            args += ["-i", identity]
        if self.login:
            args += ["-l", self.login]
        if self.port:
            args += ["-p", str(self.port)]
        for option in self.options:
            args += ["-o", option]
        return args


@dataclass(frozen=True)
class Resolved:
    """What `ssh -G` says ssh will really do for a target."""

    hostname: str
    user: str
    port: int
    settings: dict[str, str] = field(default_factory=dict)
    text: str = ""

    def key(self) -> str:
        """Names the connection: every labhop whose `ssh -G` says the same shares it."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        port = "" if self.port == 22 else f":{self.port}"
        return f"{self.user}@{self.hostname}{port}"


def ssh_binary() -> str:
    found = shutil.which("ssh")
    if found is None:
        raise SSHMissingError(
            "the OpenSSH client `ssh` is not on PATH; install it (Debian: apt install "
            "openssh-client, macOS: built in) and retry"
        )
    return found


def parse_ssh_g(text: str) -> Resolved:
    """Parse `ssh -G` output (lower-case `key value` lines)."""
    settings: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key and key not in settings:
            settings[key] = value.strip()
    return Resolved(
        hostname=settings.get("hostname", ""),
        user=settings.get("user", ""),
        port=int(settings.get("port", "22") or 22),
        settings=settings,
        text=text,
    )


def default_options(resolved: Resolved) -> list[str]:
    """Keep-alive and fail-fast options, only where ssh_config left ssh's default."""
    settings = resolved.settings
    options = ["ExitOnForwardFailure=yes"]
    # Debian's ssh defaults to 300 s under BatchMode; a drop should be noticed in ~30 s.
    interval = int(settings.get("serveraliveinterval", "0") or 0)
    if interval == 0 or interval > KEEPALIVE_INTERVAL_S:
        options += [
            f"ServerAliveInterval={KEEPALIVE_INTERVAL_S}",
            f"ServerAliveCountMax={KEEPALIVE_COUNT}",
        ]
    if settings.get("connecttimeout", "none") == "none":
        options.append(f"ConnectTimeout={CONNECT_TIMEOUT_S}")
    return [arg for option in options for arg in ("-o", option)]


# One table from what ssh prints to what the user should do. Order matters: the first
# matching pattern wins, and host-key problems also print "Host key verification failed".
_FAILURES: list[tuple[re.Pattern[str], type[SSHError] | type[ConfigError], str]] = [
    (
        re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED"),
        HostKeyError,
        "the host key of {host} has changed since you last connected (the host was "
        "reinstalled, or someone is intercepting the connection); if you trust the new "
        "key, remove the old one with: {keygen}",
    ),
    (
        re.compile(r"Host key verification failed|No \S+ host key is known"),
        HostKeyError,
        "the host key of {host} is not known yet and labhop never accepts it blindly; "
        "connect once with `ssh {host}`, check and accept the key, then retry",
    ),
    (
        # EAI_AGAIN (and EAI_FAIL): the name may be right, but no DNS server answers, as on
        # an offline laptop or one that needs its VPN. Before the unknown-host line, which
        # would send the user to check a spelling that is fine.
        re.compile(r"(?i)temporary failure in name resolution"
                   r"|non-recoverable failure in name resolution"),
        ConnectError,
        "cannot reach {host}: this computer cannot resolve host names right now "
        "({line}); is it offline, or is the name only known through a VPN? Check the "
        "network and retry",
    ),
    (
        re.compile(r"Could not resolve hostname|Name or service not known|nodename nor servname"),
        HostUnknownError,
        "unknown host '{host}': it is neither a Host in your ssh config nor a name DNS "
        "knows; check the spelling or add a Host entry to ~/.ssh/config",
    ),
    (
        re.compile(r"Permission denied|Too many authentication failures"),
        AuthError,
        "{who} refused to log you in; check the key (-i KEY or ssh-agent), the user "
        "name (-l USER), or try `ssh {host}` by hand",
    ),
    (
        re.compile(r"Connection refused"),
        ConnectError,
        "{who} refused the connection; is sshd running there, and is the port right "
        "(-p PORT)?",
    ),
    (
        re.compile(
            r"timed out|Operation timed out|No route to host|Network is unreachable"
            r"|Host is down"
        ),
        ConnectError,
        "cannot reach {who}: the connection timed out or has no route; check the network, "
        "VPN or jump host (-J)",
    ),
    (
        re.compile(
            r"kex_exchange_identification|Connection closed by|Connection reset"
            r"|Broken pipe|Connection to \S+ closed"
        ),
        ConnectError,
        "{who} closed the connection during login; the host may be overloaded or "
        "limit connections; retry, or check with `ssh {host}`",
    ),
    (
        re.compile(
            r"Bad configuration option|command-line line|Bad port|Unsupported option"
            r"|terminating, \d+ bad configuration options|Can't open user config file"
        ),
        ConfigError,
        "ssh rejected its configuration: {line}",
    ),
]


def classify_failure(stderr: str, *, host: str, who: str) -> SSHError | ConfigError:
    """Turn what a failed ssh printed into the error the user should see."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for pattern, error_type, template in _FAILURES:
        for line in lines:
            if pattern.search(line):
                message = template.format(
                    host=host, who=who, line=line, keygen=_keygen_hint(stderr, host)
                )
                return error_type(message)
    last = lines[-1] if lines else "no message"
    return SSHError(f"ssh to {host} failed: {last}")


def _keygen_hint(stderr: str, host: str) -> str:
    match = re.search(r"(ssh-keygen -f .+? -R \S+)", stderr)
    return match.group(1) if match else f"ssh-keygen -R {host}"


# What the tunnel's LocalCommand prints once ssh listens on the local port: the one proof
# that *our* ssh holds that port (it runs only after every -L was bound; with
# ExitOnForwardFailure a port someone else holds ends ssh instead).
TUNNEL_READY = "labhop:tunnel-ready"
# labhop's own master ends this long after its last user is gone, if nothing else ended it
# (every labhop that used it was killed outright, watchdogs included).
MASTER_SAFETY_PERSIST_S = 30


def resolve(target: Target, ssh: str) -> Resolved:
    """Ask `ssh -G` what it will do for `target`; also catches a bad config file early."""
    # -T: `ssh -G` with no terminal on stdin otherwise warns about the pseudo-terminal.
    result = proc.run([ssh, "-T", "-G", *target.user_args(), "--", target.host],
                      timeout=30, log_output=False)
    if result.returncode != 0:
        raise classify_failure(result.stderr, host=target.host, who=target.host)
    return parse_ssh_g(result.stdout)


def control_argv(ssh: str, control_path: Path | str, command: str, host: str) -> list[str]:
    """`ssh -O COMMAND`: talks only to the master, so it reads no ssh config at all (a
    config deleted since, or one with LocalForward lines, must not change what it does)."""
    return [ssh, "-F", os.devnull, "-S", str(control_path), "-O", command, "--", host]


def master_alive(ssh: str, control_path: Path | str, host: str) -> bool:
    return (os.path.exists(control_path)
            and master_pid(control_argv(ssh, control_path, "check", host)) != 0)


def open_master(target: Target, resolved: Resolved, ssh: str, *, control_path: Path,
                log_path: Path, persist_s: int) -> None:
    """Start a ControlMaster; its prompts (password, 2FA, host key) reach the terminal.

    `-f`: once logged in it detaches into its own session, so a terminal's Ctrl+C reaches
    labhop but not the connection that labhop still needs to stop the server.
    """
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    # A master killed without cleanup leaves its socket behind, and a new master would
    # then run without multiplexing.
    control_path.unlink(missing_ok=True)
    argv = [
        ssh, "-M", "-N", "-f",
        "-S", str(control_path),
        "-o", f"ControlPersist={max(persist_s, MASTER_SAFETY_PERSIST_S)}s",
        # Forwards from ssh_config (e.g. the LocalForward 8888 of a manual Jupyter routine)
        # are not ours to open, and one already in use would fail the master.
        "-o", "ClearAllForwardings=yes",
        *target.user_args(),
        *default_options(resolved),
        "--", target.host,
    ]
    returncode = proc.run_interactive(argv, stderr_path=log_path)
    if returncode != 0 or not master_alive(ssh, control_path, target.host):
        stderr = log_path.read_text(encoding="utf-8", errors="replace")
        raise classify_failure(stderr, host=target.host, who=describe(target, resolved))


def describe(target: Target, resolved: Resolved) -> str:
    if resolved.hostname == target.host:
        return resolved.describe()
    return f"{target.host} ({resolved.describe()})"


# One forward of a tunnel: (local port on 127.0.0.1, remote end: a socket path or host:port).
Forward = tuple[int, str]


def forward_spec(forward: Forward) -> str:
    """The `-L` argument of one forward; the local end is on loopback only."""
    local_port, remote = forward
    return f"127.0.0.1:{local_port}:{remote}"


class Tunnel:
    """A set of `-L 127.0.0.1:PORT:REMOTE` forwards of labhop's, opened together, and the
    guard that removes them when labhop is gone, however labhop died (see `labhop.guard`).

    The token goes to a local port of the set only while `holds()` is true: while
    labhop's own ssh listens there, no other program can.
    """

    def __init__(self, guard: subprocess.Popen[str], forwards: Sequence[Forward]) -> None:
        self.guard = guard
        self.forwards = tuple(forwards)

    def holds(self) -> bool:
        raise NotImplementedError

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


def cancel_forward(*, ssh: str, control_path: str, spec: str, host: str) -> None:
    """Remove one forward of labhop's from a master (its own or the user's), and only it.

    One spec per call: `ssh -O cancel` with several stops at the first it cannot cancel.
    """
    if os.path.exists(control_path):
        cancel = control_argv(ssh, control_path, "cancel", host)
        proc.run([*cancel[:-2], "-L", spec, *cancel[-2:]], timeout=15)


def master_pid(check_argv: list[str]) -> int:
    """The PID `ssh -O check` reports ("Master running (pid=N)"), 0 if none answers."""
    result = proc.run(check_argv, timeout=15)
    match = re.search(r"pid=(\d+)", result.stderr)
    return int(match.group(1)) if result.returncode == 0 and match else 0


class Transport:
    """How each step reaches the host. Knows ssh flags, never shell syntax or Jupyter."""

    multiplexed = False

    def __init__(self, target: Target, resolved: Resolved, ssh: str, log_dir: Path) -> None:
        self.target = target
        self.resolved = resolved
        self.ssh = ssh
        self.log_dir = log_dir

    def describe(self) -> str:
        return describe(self.target, self.resolved)

    def is_alive(self) -> bool:
        raise NotImplementedError

    def step_argv(self, *extra: str) -> list[str]:
        raise NotImplementedError

    def _failure(self, stderr: str) -> SSHError | ConfigError:
        return classify_failure(stderr, host=self.target.host, who=self.describe())

    def run_script(self, script: str, *, login: bool = False,
                   timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a POSIX sh script on the remote, sent on stdin. Returns the raw result.

        `login` runs it in the user's login environment (PATH, modules, conda), which
        only steps that start or look for programs need.
        """
        command = REMOTE_LOGIN_BOOTSTRAP if login else REMOTE_PLAIN_BOOTSTRAP
        argv = [*self.step_argv("-T"), command]
        try:
            # A step of its own may ask for a password, on the terminal; a mux client never
            # asks, so it runs out of reach of the terminal's Ctrl+C.
            result = proc.run(argv, input_text=script, timeout=timeout,
                              new_session=self.multiplexed)
        except subprocess.TimeoutExpired as exc:
            raise SSHError(
                f"{self.target.host} did not finish a step within {timeout:.0f} s; the host "
                "or its file system may be overloaded (retry, or see --debug)"
            ) from exc
        if result.returncode == 255:
            raise self._failure(result.stderr)
        return result

    def start_script(self, script: str, *,
                     stdout: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
        """Run a script that lives as long as we hold its stdin open (see `proc.spawn`)."""
        return proc.spawn([*self.step_argv("-T"), REMOTE_PLAIN_BOOTSTRAP], stdin_text=script,
                          stdout=stdout, detached=self.multiplexed)

    def open_tunnel(self, forwards: Sequence[Forward]) -> Tunnel:
        """Forward each 127.0.0.1:PORT to its remote end (a socket path or host:port), all
        or none: a port that cannot be had raises LocalPortError naming it (`.port`)."""
        raise NotImplementedError

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


_PORT_FAILURE = re.compile(r"Address already in use|cannot listen to port|Could not request "
                           r"local forwarding")


def taken_local_port(stderr: str, ports: Sequence[int]) -> int | None:
    """Which of `ports` ssh could not listen on, from what it printed ("bind
    [127.0.0.1]:6006: Address already in use", "cannot listen to port: 6006"); with
    ExitOnForwardFailure it stops at the first. None if it names none of them."""
    for match in re.finditer(r"cannot listen to port: (\d+)|^bind \[[^\]]*\]:(\d+): ", stderr,
                             re.MULTILINE):
        port = int(match.group(1) or match.group(2))
        if port in ports:
            return port
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""

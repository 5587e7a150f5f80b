"""Drives the system OpenSSH client: one master connection, scripts over it, forwards.

This module builds ssh argv and runs it; it never composes remote shell text
(that is `remote`'s job) and knows nothing about Jupyter.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
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

_LOGGER = logging.getLogger(__name__)

# The command the remote login shell runs for every script. The script itself comes on
# stdin, so nothing secret or user-supplied is ever an ssh argument (arguments show up in
# `ps` for every user of both machines). It starts a *login* shell so PATH, modules and
# conda are set up as when the user logs in, then hands stdin to a POSIX sh, whatever
# the user's login shell is (csh-family shells do not take `-l -c`, so they get plain sh).
REMOTE_LOGIN_BOOTSTRAP = (
    "/bin/sh -c 'case \"${SHELL##*/}\" in"
    " bash|zsh|ksh|mksh|dash|sh|fish) exec \"$SHELL\" -l -c \"exec /bin/sh -s\";;"
    " *) exec /bin/sh -s;; esac'"
)
REMOTE_PLAIN_BOOTSTRAP = "exec /bin/sh -s"

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


class Connection:
    """One ControlMaster connection; every later step is a cheap mux client over it.

    The master is started with `-f`: it asks its prompts on the terminal, then detaches
    into its own session, so a terminal Ctrl+C reaches labhop but not the connection that
    labhop still needs to stop the server.
    """

    def __init__(self, target: Target, control_dir: Path) -> None:
        self.target = target
        self.control_path = control_dir / "cm"
        self.log_path = control_dir / "ssh.log"
        self._ssh = ssh_binary()
        self._resolved: Resolved | None = None

    # -- configuration -------------------------------------------------------------
    def resolve(self) -> Resolved:
        """Ask `ssh -G` what it will do; also catches a bad config file early."""
        if self._resolved is None:
            result = proc.run([self._ssh, "-G", *self.target.user_args(), "--",
                               self.target.host], timeout=30, log_output=False)
            if result.returncode != 0:
                raise classify_failure(result.stderr, host=self.target.host,
                                       who=self.target.host)
            self._resolved = parse_ssh_g(result.stdout)
        return self._resolved

    def describe(self) -> str:
        resolved = self.resolve()
        if resolved.hostname == self.target.host:
            return resolved.describe()
        return f"{self.target.host} ({resolved.describe()})"

    def _client_argv(self, *extra: str) -> list[str]:
        # BatchMode: a mux client must never prompt (it has no terminal); if the master
        # is gone it fails fast instead of hanging on a password prompt. The user's
        # LocalForward/RemoteCommand lines are for their own sessions, not for ours.
        return [self._ssh, "-S", str(self.control_path), "-o", "ControlMaster=no",
                "-o", "BatchMode=yes",
                "-o", "ClearAllForwardings=yes", "-o", "RemoteCommand=none",
                *self.target.user_args(), *extra, "--", self.target.host]

    def _control_argv(self, command: str, *extra: str) -> list[str]:
        """`ssh -O COMMAND`: talks only to the master, so it reads no ssh config at all:
        a config's LocalForward lines would otherwise be requested again with every
        `-O forward`, and a config file deleted since would make `-O exit` fail."""
        return [self._ssh, "-F", "/dev/null", "-S", str(self.control_path), "-O", command,
                *extra, "--", self.target.host]

    # -- the master ----------------------------------------------------------------
    def open(self) -> None:
        """Start the master connection; prompts (password, 2FA, host key) reach the tty."""
        resolved = self.resolve()
        self.log_path.write_text("", encoding="utf-8")
        # A master killed without cleanup leaves its socket behind, and a new master
        # would then run without multiplexing.
        self.control_path.unlink(missing_ok=True)
        argv = [
            self._ssh, "-M", "-N", "-f",
            "-S", str(self.control_path),
            "-o", "ControlPersist=no",
            # Forwards from ssh_config (e.g. the LocalForward 8888 of a manual Jupyter
            # routine) are not ours to open, and one already in use would fail the master.
            "-o", "ClearAllForwardings=yes",
            *self.target.user_args(),
            *default_options(resolved),
            "--", self.target.host,
        ]
        returncode = proc.run_interactive(argv, stderr_path=self.log_path)
        if returncode != 0 or not self.is_alive():
            stderr = self.log_path.read_text(encoding="utf-8", errors="replace")
            raise classify_failure(stderr, host=self.target.host, who=self.describe())

    def is_alive(self) -> bool:
        if not self.control_path.exists():
            return False
        result = proc.run(self._control_argv("check"), timeout=15)
        return result.returncode == 0

    def close(self) -> None:
        """Stop the master (and with it every forward). Safe to call when it is gone."""
        if self.control_path.exists():
            proc.run(self._control_argv("exit"), timeout=15)

    # -- steps over the master -------------------------------------------------------
    def run_script(self, script: str, *, login: bool = False,
                   timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a POSIX sh script on the remote, sent on stdin. Returns the raw result.

        `login` runs it in the user's login environment (PATH, modules, conda), which
        only the launch needs; other steps skip the cost of the login files.
        """
        command = REMOTE_LOGIN_BOOTSTRAP if login else REMOTE_PLAIN_BOOTSTRAP
        argv = [*self._client_argv("-T"), command]
        try:
            result = proc.run(argv, input_text=script, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise SSHError(
                f"{self.target.host} did not finish a step within {timeout:.0f} s; the host "
                "or its file system may be overloaded (retry, or see --debug)"
            ) from exc
        if result.returncode == 255:
            raise classify_failure(result.stderr, host=self.target.host, who=self.describe())
        return result

    def start_script(self, script: str, *,
                     stdout: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
        """Run a script that lives as long as we hold its stdin open (see `proc.spawn`)."""
        argv = [*self._client_argv("-T"), REMOTE_PLAIN_BOOTSTRAP]
        return proc.spawn(argv, stdin_text=script, stdout=stdout)

    def start_watchdog(self, run_dir: Path) -> subprocess.Popen[str]:
        """A local process that closes the master once labhop is gone, however it died.

        The master detached from us (`ssh -f`), so nothing else would end it after a
        `kill -9`: the watchdog waits for EOF on its stdin, which only labhop holds.
        """
        exit_argv = self._control_argv("exit")
        script = 'cat >/dev/null; "$@" >/dev/null 2>&1; rm -rf -- "$0"'
        return proc.spawn(["/bin/sh", "-c", script, str(run_dir), *exit_argv])

    def forward(self, local_port: int, remote: str) -> None:
        """Forward 127.0.0.1:local_port to `remote` (a socket path or host:port)."""
        spec = f"127.0.0.1:{local_port}:{remote}"
        result = proc.run(self._control_argv("forward", "-L", spec), timeout=30)
        if result.returncode != 0:
            if not self.is_alive():
                raise classify_failure(result.stderr, host=self.target.host,
                                       who=self.describe())
            raise LocalPortError(
                f"cannot listen on 127.0.0.1:{local_port}: "
                f"{_last_line(result.stderr) or 'port forwarding failed'}"
            )

    def cancel_forward(self, local_port: int, remote: str) -> None:
        spec = f"127.0.0.1:{local_port}:{remote}"
        proc.run(self._control_argv("cancel", "-L", spec), timeout=30)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""

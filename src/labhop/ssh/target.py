"""Where to connect and what OpenSSH will really do there (`ssh -G`)."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field

from labhop.errors import SSHMissingError
from labhop.ssh import proc
from labhop.ssh.failures import classify_failure

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

    def command(self, *words: str, after: tuple[str, ...] = ()) -> str:
        """`labhop WORDS... [ssh options] HOST AFTER...` as a user can paste it back: with the
        options that were needed to reach the host, each quoted for a POSIX shell."""
        import shlex  # noqa: PLC0415 -- only for a hint that is printed

        options = [*self.user_args(), *([] if self.multiplex else ["--no-multiplex"])]
        return shlex.join(["labhop", *words, *options, self.host, *after])

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


def resolve(target: Target, ssh: str) -> Resolved:
    """Ask `ssh -G` what it will do for `target`; also catches a bad config file early."""
    # -T: `ssh -G` with no terminal on stdin otherwise warns about the pseudo-terminal.
    result = proc.run([ssh, "-T", "-G", *target.user_args(), "--", target.host],
                      timeout=30, log_output=False)
    if result.returncode != 0:
        raise classify_failure(result.stderr, host=target.host, who=target.host)
    return parse_ssh_g(result.stdout)


def describe(target: Target, resolved: Resolved) -> str:
    if resolved.hostname == target.host:
        return resolved.describe()
    return f"{target.host} ({resolved.describe()})"

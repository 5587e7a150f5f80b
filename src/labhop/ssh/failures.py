"""What a failed ssh printed, turned into the error the user should see (one table)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from labhop.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    HostKeyError,
    HostUnknownError,
    SSHError,
)

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

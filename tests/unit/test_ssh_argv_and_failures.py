"""Pure parts of `labhop.ssh`: pass-through argv, `ssh -G` parsing, the failure table.

The stderr samples were captured from OpenSSH 9.2p1 against the loopback test sshd.
"""

from __future__ import annotations

import pytest

from labhop import errors
from labhop.ssh.failures import classify_failure
from labhop.ssh.target import Target, default_options, parse_ssh_g

HOST_KEY_CHANGED = """\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Offending ED25519 key in /tmp/w/known_hosts_bad:1
  remove with:
  ssh-keygen -f "/tmp/w/known_hosts_bad" -R "[127.0.0.1]:54997"
Host key for [127.0.0.1]:54997 has changed and you have requested strict checking.
Host key verification failed.
"""

SAMPLES = [
    ("lhtest@127.0.0.1: Permission denied (publickey).", errors.AuthError, "refused to log you in"),
    (
        "ssh: Could not resolve hostname nosuchhost.invalid: Name or service not known",
        errors.HostUnknownError,
        "unknown host 'box'",
    ),
    (
        # EAI_AGAIN: offline, or no DNS server reachable: the name may well be right.
        "ssh: Could not resolve hostname gamer: Temporary failure in name resolution",
        errors.ConnectError,
        "cannot resolve host names right now (ssh: Could not resolve hostname gamer: "
        "Temporary failure in name resolution); is it offline, or is the name only known "
        "through a VPN?",
    ),
    (
        # macOS spells EAI_AGAIN in lower case; a jump host's name can be the one that fails.
        "ssh: Could not resolve hostname bastion: temporary failure in name resolution\n"
        "Connection closed by UNKNOWN port 65535",
        errors.ConnectError,
        "Could not resolve hostname bastion",
    ),
    (
        HOST_KEY_CHANGED,
        errors.HostKeyError,
        'remove the old one with: ssh-keygen -f "/tmp/w/known_hosts_bad" -R "[127.0.0.1]:54997"',
    ),
    (
        "No ED25519 host key is known for [127.0.0.1]:54997 and you have requested strict "
        "checking.\nHost key verification failed.",
        errors.HostKeyError,
        "not known yet",
    ),
    (
        "ssh: connect to host 127.0.0.1 port 60125: Connection refused",
        errors.ConnectError,
        "refused the connection",
    ),
    (
        "ssh: connect to host 10.1.2.3 port 22: Connection timed out",
        errors.ConnectError,
        "timed out",
    ),
    (
        "command-line: line 0: Bad configuration option: bogus",
        errors.ConfigError,
        "Bad configuration option: bogus",
    ),
    (
        "Can't open user config file /nonexist: No such file or directory",
        errors.ConfigError,
        "/nonexist",
    ),
    ("something new and strange", errors.SSHError, "ssh to box failed: something new"),
]


@pytest.mark.parametrize(("stderr", "error_type", "fragment"), SAMPLES)
def test_failure_table(stderr: str, error_type: type[Exception], fragment: str) -> None:
    error = classify_failure(stderr, host="box", who="box (u@h)")
    assert type(error) is error_type
    assert fragment in str(error)


def test_an_offline_laptop_is_not_told_to_check_the_spelling() -> None:
    # getaddrinfo's two answers, as ssh prints them: EAI_AGAIN (no DNS server answers)
    # and EAI_NONAME (DNS answered: no such name).
    offline = classify_failure(
        "ssh: Could not resolve hostname gamer: Temporary failure in name resolution",
        host="gamer", who="gamer")
    unknown = classify_failure(
        "ssh: Could not resolve hostname gamer: Name or service not known",
        host="gamer", who="gamer")
    assert offline.status == errors.ExitStatus.CONNECT_FAILED
    assert "spelling" not in str(offline) and "unknown host" not in str(offline)
    assert str(offline).startswith("cannot reach gamer: this computer cannot resolve host names")
    assert unknown.status == errors.ExitStatus.HOST_UNKNOWN
    assert "check the spelling" in str(unknown)


def test_user_args_follow_ssh_syntax() -> None:
    target = Target(
        host="gamer",
        config_file="cfg",
        jump="a,b",
        identity_files=("k1", "k2"),
        login="me",
        port=2222,
        options=("Compression=yes",),
    )
    assert target.user_args() == [
        "-F",
        "cfg",
        "-J",
        "a,b",
        "-i",
        "k1",
        "-i",
        "k2",
        "-l",
        "me",
        "-p",
        "2222",
        "-o",
        "Compression=yes",
    ]


def test_parse_ssh_g_keeps_the_first_value() -> None:
    resolved = parse_ssh_g("host gamer\nuser me\nhostname 10.0.0.5\nport 2222\nuser other\n")
    assert (resolved.user, resolved.hostname, resolved.port) == ("me", "10.0.0.5", 2222)
    assert resolved.describe() == "me@10.0.0.5:2222"


def test_default_options_respect_what_the_config_chose() -> None:
    chosen = parse_ssh_g("serveraliveinterval 5\nconnecttimeout 3\n")
    assert default_options(chosen) == ["-o", "ExitOnForwardFailure=yes"]
    debian_batch_default = parse_ssh_g("serveraliveinterval 300\nconnecttimeout none\n")
    assert default_options(debian_batch_default) == [
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "ServerAliveInterval=10",
        "-o",
        "ServerAliveCountMax=3",
        "-o",
        "ConnectTimeout=20",
    ]


def test_a_printed_command_repeats_the_ssh_options_quoted_to_paste_back() -> None:
    target = Target(host="gamer", config_file="~/my config", jump="bastion", login="me",
                    port=2222, identity_files=("~/.ssh/id x",), options=("User=o'neil",))
    assert target.command("attach", after=("proj",)) == (
        "labhop attach -F '~/my config' -J bastion -i '~/.ssh/id x' -l me -p 2222 "
        "-o 'User=o'\"'\"'neil' gamer proj")
    assert Target(host="gamer", multiplex=False).command("stop", after=("a b",)) == (
        "labhop stop --no-multiplex gamer 'a b'")
    assert Target(host="gamer").command() == "labhop gamer"

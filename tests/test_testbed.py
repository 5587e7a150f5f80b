"""The test bed itself: if these fail, every end-to-end failure elsewhere is suspect."""

from __future__ import annotations

import pwd
import secrets
import subprocess
import time
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.jupyter_api import KernelError, api_status, execute, shutdown_kernel
from tests.testbed import (
    HOME,
    USER,
    Askpass,
    Sshd,
    free_port,
    kill_user_processes,
    listening_addresses,
    processes_with_in_cmdline,
    reset_remote_state,
    start_sshd,
    user_processes,
)

pytestmark = pytest.mark.e2e

CONDA_SH = f"{HOME}/miniforge3/etc/profile.d/conda.sh"


def test_ssh_logs_in_as_the_test_user(sshd: Sshd) -> None:
    result = sshd.run(sshd.alias(), "id -un")
    assert (result.returncode, result.stdout) == (0, f"{USER}\n"), result.stderr


def test_proxyjump_reads_the_same_config_file(sshd: Sshd) -> None:
    result = sshd.run("-J", sshd.alias(), sshd.alias("jumped"), "id -un")
    assert (result.returncode, result.stdout) == (0, f"{USER}\n"), result.stderr


def test_only_a_login_shell_finds_jupyter(sshd: Sshd) -> None:
    login = sshd.run(sshd.alias(), "bash -lc 'command -v jupyter'")
    assert login.stdout == f"{HOME}/jvenv/bin/jupyter\n", login.stderr
    plain = sshd.run(sshd.alias(), "sh -c 'command -v jupyter'")
    assert plain.returncode != 0
    assert plain.stdout == ""


@pytest.mark.parametrize(
    ("env", "expected_prefix", "jupyter"),
    [
        ("jl", f"{HOME}/miniforge3/envs/jl", f"{HOME}/miniforge3/envs/jl/bin/jupyter\n"),
        ("bare", f"{HOME}/miniforge3/envs/bare", ""),
        ("base", f"{HOME}/miniforge3", ""),
    ],
    ids=["jl", "bare", "base"],  # the same on every xdist worker, whose HOMEs differ
)
def test_conda_stand_in_activates(sshd: Sshd, env: str, expected_prefix: str, jupyter: str) -> None:
    script = f'. {CONDA_SH} && conda activate {env} && echo "$CONDA_PREFIX" && command -v jupyter'
    result = sshd.run(sshd.alias(), f"sh -c '{script}'")
    assert result.stdout == f"{expected_prefix}\n{jupyter}", result.stderr


def test_conda_stand_in_rejects_unknown_env(sshd: Sshd) -> None:
    result = sshd.run(sshd.alias(), f"sh -c '. {CONDA_SH} && conda activate nope'")
    assert result.returncode == 1
    assert "EnvironmentNameNotFound: Could not find conda environment: nope" in result.stderr


def test_conda_stand_in_deactivates(sshd: Sshd) -> None:
    script = (
        f'. {CONDA_SH}; before=$PATH; conda activate jl; conda deactivate; [ "$PATH" = "$before" ]'
    )
    result = sshd.run(sshd.alias(), f"sh -c '{script}'")
    assert result.returncode == 0, result.stderr


def test_emptyvenv_has_python_but_no_jupyter(sshd: Sshd) -> None:
    result = sshd.run(sshd.alias(), "ls ~/emptyvenv/bin")
    assert "python3" in result.stdout.split()
    assert not [name for name in result.stdout.split() if name.startswith("jupyter")]


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("wrongkey", "Permission denied"),
        ("badhostkey", "REMOTE HOST IDENTIFICATION HAS CHANGED"),
        ("down", "Connection refused"),
    ],
)
def test_broken_aliases_fail_as_advertised(sshd: Sshd, variant: str, message: str) -> None:
    result = sshd.run(sshd.alias(variant), "true")
    assert result.returncode == 255
    assert message in result.stderr


def test_unknown_host_does_not_resolve(sshd: Sshd) -> None:
    result = sshd.run("nosuchhost.invalid", "true")
    assert result.returncode == 255
    assert "Could not resolve hostname" in result.stderr


def test_second_sshd_with_its_own_options(sshd: Sshd, tmp_path: Path) -> None:
    with start_sshd(
        tmp_path, host_alias="nostream", sshd_options={"AllowStreamLocalForwarding": "no"}
    ) as other:
        assert other.port != sshd.port
        assert other.run("nostream", "id -un").stdout == f"{USER}\n"
        effective = subprocess.run(
            ["/usr/sbin/sshd", "-T", "-f", str(tmp_path / "sshd_config")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        assert "allowstreamlocalforwarding no" in effective


def test_kill_user_processes_ends_remote_commands(sshd: Sshd) -> None:
    client = subprocess.Popen(
        sshd.ssh_argv(sshd.alias(), "sleep 4242"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until(lambda: _has_user_process("sleep 4242"), timeout=10)
        killed = kill_user_processes()
        assert any(cmdline == "sleep 4242" for _, cmdline in killed)
        assert user_processes() == []
        assert client.wait(timeout=10) != 0
    finally:
        client.kill()
        client.wait()


def test_reset_remote_state_removes_only_the_users_leftovers(sshd: Sshd) -> None:
    uid = pwd.getpwnam(USER).pw_uid
    runtime_dir = f"/tmp/labhop-{uid}"  # noqa: S108 -- labhop's node-local runtime dir
    made = sshd.run(
        sshd.alias(),
        f"mkdir -p ~/.local/state/labhop/servers/x {runtime_dir}/s && touch {runtime_dir}/s/f",
    )
    assert made.returncode == 0, made.stderr
    foreign = Path("/tmp/labhop-not-lhtest")  # noqa: S108 -- must look like labhop's runtime dir
    foreign.mkdir(exist_ok=True)
    try:
        reset_remote_state()
        assert not (HOME / ".local/state/labhop").exists()
        assert not Path(runtime_dir).exists()
        assert foreign.exists()
    finally:
        foreign.rmdir()


# --- the password-only host: every new connection asks once, through the askpass ----------


def _password_login(
    server: Sshd, askpass: Askpass, *ssh_args: str
) -> subprocess.CompletedProcess[str]:
    # No controlling terminal and stdin from /dev/null, as tests/labhop_cli.py starts labhop:
    # the askpass is the only way ssh can ask.
    return server.run(*ssh_args, env=askpass.env(), no_terminal=True, timeout=15)


def test_password_host_config_never_uses_keys_or_batch_mode(password_sshd: Sshd) -> None:
    block = password_sshd.config.read_text()
    assert block.startswith(f"Host {password_sshd.alias()}\n")
    assert "PubkeyAuthentication no\n" in block
    assert "StrictHostKeyChecking yes\n" in block
    assert "BatchMode" not in block
    assert "IdentityFile" not in block


def test_password_login_asks_once_through_askpass(password_sshd: Sshd, askpass: Askpass) -> None:
    result = _password_login(password_sshd, askpass, password_sshd.alias(), "id -un")
    assert (result.returncode, result.stdout) == (0, f"{USER}\n"), result.stderr
    assert askpass.count() == 1
    # The password prompt, never a host key's: known_hosts is strict and matches.
    assert "Password:" in askpass.prompts()[0]


def test_each_new_connection_asks_again(password_sshd: Sshd, askpass: Askpass) -> None:
    for _ in range(2):
        result = _password_login(password_sshd, askpass, password_sshd.alias(), "true")
        assert result.returncode == 0, result.stderr
    assert askpass.count() == 2


def test_a_mux_client_of_a_live_master_asks_nothing(
    password_sshd: Sshd, askpass: Askpass, tmp_path: Path
) -> None:
    alias, control = password_sshd.alias(), str(tmp_path / "cm")
    master = _password_login(password_sshd, askpass, "-M", "-N", "-f", "-S", control, alias)
    try:
        assert master.returncode == 0, master.stderr
        assert askpass.count() == 1
        client = _password_login(password_sshd, askpass, "-S", control, alias, "id -un")
        assert (client.returncode, client.stdout) == (0, f"{USER}\n"), client.stderr
        assert askpass.count() == 1
    finally:
        closed = password_sshd.run("-S", control, "-O", "exit", alias, timeout=10)
    assert closed.returncode == 0, closed.stderr
    check = password_sshd.run("-S", control, "-O", "check", alias, timeout=10)
    assert check.returncode == 255
    assert askpass.count() == 1


@pytest.mark.parametrize(
    "extra_options",
    [
        pytest.param(("-o", "BatchMode=yes"), id="batch-mode"),
        # The sshd's own key, listed by its AuthorizedKeysCommand: keys are off on the server.
        pytest.param(("-o", "BatchMode=yes", "-o", "PubkeyAuthentication=yes"), id="with-key"),
    ],
)
def test_password_host_refuses_a_login_that_cannot_ask(
    password_sshd: Sshd, askpass: Askpass, extra_options: tuple[str, ...]
) -> None:
    identity = ("-i", str(password_sshd.workdir / "id_ed25519"))
    args = (*extra_options, *identity, password_sshd.alias(), "true")
    result = _password_login(password_sshd, askpass, *args)
    assert result.returncode == 255
    assert "Permission denied" in result.stderr
    assert askpass.count() == 0


@pytest.fixture
def jupyter_server(sshd: Sshd, tmp_path: Path) -> Iterator[tuple[str, str, int]]:
    """A Jupyter server from ~/jvenv run as lhtest on 127.0.0.1; yields (url, token, port).

    The token travels on ssh's stdin, and the server gets SIGTERM when stdin closes.
    Its log goes to a file (a pipe nobody reads would fill up and stall it).
    """
    port, token = free_port(), secrets.token_hex(16)
    script = (
        f"export JUPYTER_TOKEN={token}\n"
        f"cd ~/proj && ~/jvenv/bin/jupyter server --no-browser --ip=127.0.0.1 --port={port}"
        " </dev/null &\n"
        # SIGTERM is Jupyter's clean stop, but one that lands while Jupyter writes to
        # stderr is lost ("reentrant call inside BufferedWriter", seen here): escalate as
        # labhop's own stop does.
        "j=$!; cat >/dev/null; kill -TERM $j\n"
        "n=0; while kill -0 $j 2>/dev/null && [ $n -lt 50 ]; do sleep 0.2; n=$((n+1)); done\n"
        "kill -KILL $j 2>/dev/null; wait $j\n"
    )
    log_path = tmp_path / "jupyter.log"
    with log_path.open("w") as log:
        client = subprocess.Popen(
            sshd.ssh_argv(sshd.alias(), "sh -s"),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    assert client.stdin is not None
    client.stdin.write(script)
    client.stdin.flush()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: _jupyter_ready(client, url, token, log_path), timeout=60)
        yield url, token, port
    finally:
        client.stdin.close()
        client.wait(timeout=30)


def test_jupyter_runs_code_as_the_test_user(jupyter_server: tuple[str, str, int]) -> None:
    url, token, port = jupyter_server
    assert "started" in api_status(url, token)
    assert listening_addresses(port) == {"127.0.0.1"}
    assert processes_with_in_cmdline(token) == []
    code = "import getpass, os\nprint(getpass.getuser())\nos.getcwd()"
    output, kernel = execute(url, token, code)
    assert output == f"{USER}\n'{HOME}/proj'\n"
    assert execute(url, token, "6 * 7", kernel_id=kernel) == ("42\n", kernel)
    with pytest.raises(KernelError, match="ZeroDivisionError"):
        execute(url, token, "1 / 0", kernel_id=kernel)
    shutdown_kernel(url, token, kernel)


def test_jupyter_refuses_a_wrong_token(jupyter_server: tuple[str, str, int]) -> None:
    url, _, _ = jupyter_server
    with pytest.raises(urllib.error.HTTPError, match="403"):
        api_status(url, "wrong")


def _has_user_process(cmdline: str) -> bool:
    return any(found == cmdline for _, found in user_processes())


def _jupyter_ready(client: subprocess.Popen[str], url: str, token: str, log_path: Path) -> bool:
    if client.poll() is not None:
        raise AssertionError(f"jupyter's ssh session ended early:\n{log_path.read_text()}")
    try:
        api_status(url, token, timeout=2)
    except (urllib.error.URLError, ConnectionError):
        return False
    return True


def _wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{condition} still false after {timeout:g}s")
        time.sleep(0.1)

"""`labhop HOST` end to end: the real CLI, a real sshd on loopback, a real Jupyter server,
real kernels executing code through the tunnel."""

from __future__ import annotations

import json
import os
import shlex
import socket
import stat
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from labhop.ssh.ports import preferred_port
from tests import jupyter_api
from tests.labhop_cli import LabhopProcess, run_labhop
from tests.testbed import (
    HOME,
    USER,
    Sshd,
    listening_addresses,
    processes_with_in_cmdline,
    start_sshd,
    user_processes,
)

pytestmark = pytest.mark.e2e

URL = r"http://127\.0\.0\.1:(?P<port>\d+)(?P<path>/\S*)\?token=(?P<token>[0-9a-f]{48})"
STATE = HOME / ".local/state/labhop/servers"


def start(sshd: Sshd, *args: str) -> LabhopProcess:
    return LabhopProcess.start("-F", str(sshd.config), *args, "--no-browser")


def wait_until_no_user_processes(timeout: float = 15) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    while True:
        left = user_processes()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def stop_with_ctrl_c(labhop: LabhopProcess) -> None:
    labhop.interrupt()
    assert labhop.wait(30) == 0, labhop.output
    assert "stopped 'proj'" in labhop.output or "stopped '" in labhop.output
    assert wait_until_no_user_processes() == []


def test_lab_in_a_venv_runs_code_and_ctrl_c_leaves_nothing(sshd: Sshd) -> None:
    with start(sshd, "gpubox", "--env", "venv:~/jvenv", "--dir", "~/proj") as labhop:
        url = labhop.wait_for(URL, timeout=90)
        port, token = int(url["port"]), url["token"]
        base = f"http://127.0.0.1:{port}"
        assert url["path"] == "/lab"
        assert "JupyterLab is ready on gpubox" in labhop.output

        output, _ = jupyter_api.execute(
            base,
            token,
            "import os, sys, getpass\nprint(getpass.getuser(), os.getcwd(), sys.prefix)\n6 * 7",
        )
        assert output.split() == [USER, str(HOME / "proj"), str(HOME / "jvenv"), "42"]

        # Security: the token is on no command line, the local end is loopback only, and
        # the remote socket is private.
        assert processes_with_in_cmdline(token) == []
        assert listening_addresses(port) == {"127.0.0.1"}
        endpoint = (STATE / "proj" / "endpoint").read_text().strip()
        assert endpoint.startswith("unix:")
        sock = Path(endpoint.removeprefix("unix:"))
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE((STATE / "proj" / "token").stat().st_mode) == 0o600
        record = json.loads((STATE / "proj" / "launch.json").read_text())
        assert record["env"] == "venv:~/jvenv"

        stop_with_ctrl_c(labhop)
        assert not (STATE / "proj").exists()
        assert not sock.exists()


@pytest.mark.parametrize(
    ("app", "env", "path", "prefix"),
    [
        ("notebook", ["--env", "conda:jl"], "/tree", HOME / "miniforge3/envs/jl"),
        ("server", [], "/", HOME / "jvenv"),
    ],
    ids=["notebook-in-conda", "server-on-login-path"],
)
def test_each_app_and_env_reaches_ready(
    sshd: Sshd, app: str, env: list[str], path: str, prefix: Path
) -> None:
    # conda itself cannot be installed here: ~/miniforge3/etc/profile.d/conda.sh is a
    # stand-in that defines `conda activate` the way conda's own does (scripts/testbed-setup).
    with start(sshd, "gpubox", "--app", app, *env, "--name", "proj") as labhop:
        url = labhop.wait_for(URL, timeout=90)
        assert url["path"] == path
        output, _ = jupyter_api.execute(
            f"http://127.0.0.1:{url['port']}",
            url["token"],
            "import os; print(os.environ.get('CONDA_PREFIX') or os.environ['PATH'].split(':')[0])",
        )
        assert output.strip().startswith(str(prefix))
        stop_with_ctrl_c(labhop)


def test_through_a_jump_host(sshd: Sshd) -> None:
    with start(sshd, "-J", "gpubox", "gpubox-jumped", "--name", "proj") as labhop:
        url = labhop.wait_for(URL, timeout=90)
        status = jupyter_api.api_status(f"http://127.0.0.1:{url['port']}", url["token"])
        assert "started" in status
        stop_with_ctrl_c(labhop)


def test_sigterm_stops_the_server_too(sshd: Sshd) -> None:
    with start(sshd, "gpubox", "--name", "proj") as labhop:
        labhop.wait_for(URL, timeout=90)
        labhop.terminate()
        assert labhop.wait(30) == 0, labhop.output
        assert wait_until_no_user_processes() == []


def test_ctrl_c_during_start_up_leaves_nothing(sshd: Sshd) -> None:
    with start(sshd, "gpubox", "--name", "proj") as labhop:
        labhop.wait_for(r"waiting for JupyterLab to answer", timeout=60)
        labhop.interrupt()
        assert labhop.wait(30) == 130, labhop.output
        assert "interrupted before the server was ready" in labhop.output
    assert wait_until_no_user_processes() == []
    assert not (STATE / "proj").exists()


def test_keep_leaves_the_server_running_and_says_how_to_find_it(sshd: Sshd) -> None:
    with start(sshd, "gpubox", "--name", "proj", "--keep") as labhop:
        url = labhop.wait_for(URL, timeout=90)
        labhop.interrupt()
        assert labhop.wait(30) == 0, labhop.output
        # The hint repeats the ssh options that reach the host, quoted to paste back.
        hint = labhop.output.split("reattach with: ", 1)[1].splitlines()[0]
        assert shlex.split(hint) == ["labhop", "attach", "-F", str(sshd.config), "gpubox",
                                     "proj"]
    pid = int((STATE / "proj" / "pid").read_text())
    assert any(p == pid for p, _ in user_processes())
    # Starting again under the same name attaches to it, with a token of its own: the one
    # that went out with the port labhop released no longer opens the server.
    with start(sshd, "gpubox", "--name", "proj") as again:
        url2 = again.wait_for(URL, timeout=60)
        assert "already running" in again.output
        assert url2["token"] != url["token"]
        base = f"http://127.0.0.1:{url2['port']}"
        assert jupyter_api.api_status(base, url2["token"])["started"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            jupyter_api.api_status(base, url["token"])
        assert refused.value.code == 403
        again.interrupt()
        assert again.wait(30) == 0, again.output
    assert any(p == pid for p, _ in user_processes())


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["gpubox-wrongkey"], 12, "refused to log you in"),
        (["nosuchhost.invalid"], 10, "unknown host 'nosuchhost.invalid'"),
        (["gpubox-badhostkey"], 13, "host key of gpubox-badhostkey has changed"),
        (["gpubox-down"], 11, "refused the connection"),
        (["gpubox", "--env", "venv:~/nope"], 20, f"no virtualenv at {HOME}/nope on gpubox"),
        (["gpubox", "--env", "conda:nope"], 20, "conda environment 'nope' not found on gpubox"),
        (["gpubox", "--env", "venv:~/emptyvenv"], 21, "jupyter-lab is not installed in venv"),
        (["gpubox", "--dir", "~/no-such-dir"], 22,
         f"server root {HOME}/no-such-dir does not exist on gpubox"),
        (["gpubox", "--env", "python3"], 2, "bad --env 'python3'"),
        (["gpubox", "--", "--ServerApp.root_dir=/no/such/dir"], 23, "exited during start-up"),
    ],
    ids=[
        "wrong-key",
        "unknown-host",
        "host-key-changed",
        "refused",
        "no-venv",
        "no-conda-env",
        "env-without-jupyter",
        "bad-dir",
        "bad-env-spec",
        "server-exits",
    ],
)
def test_user_errors_are_one_plain_line_and_a_distinct_status(
    sshd: Sshd, args: list[str], status: int, message: str
) -> None:
    result = run_labhop("-F", str(sshd.config), "--no-browser", *args, timeout=90)
    assert result.rc == status, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("labhop: error:")]
    assert len(errors) == 1, result.stderr
    assert message in errors[0]
    assert wait_until_no_user_processes() == []


def test_errors_name_the_host_as_typed_not_the_remotes_own_name(sshd: Sshd) -> None:
    # gpubox is an alias in the test's ssh config; the machine calls itself otherwise.
    own_name = socket.gethostname()
    assert own_name != "gpubox"
    result = run_labhop("-F", str(sshd.config), "gpubox", "--no-browser", "--env",
                        "venv:~/emptyvenv", timeout=90)
    assert result.rc == 21, result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("labhop: error:")]
    assert "jupyter-lab is not installed in venv:~/emptyvenv on gpubox" in error
    assert f"on {own_name} " not in error and f"on {own_name};" not in error


def test_server_exit_shows_the_last_log_lines(sshd: Sshd) -> None:
    result = run_labhop(
        "-F",
        str(sshd.config),
        "gpubox",
        "--no-browser",
        "--",
        "--ServerApp.root_dir=/no/such/dir",
        timeout=90,
    )
    assert result.rc == 23
    assert "/no/such/dir" in result.stderr.split("exited during start-up", 1)[1]


def test_a_timeout_never_prints_a_log_header_above_nothing(sshd: Sshd) -> None:
    result = run_labhop("-F", str(sshd.config), "gpubox", "--no-browser", "--timeout", "1",
                        timeout=90)
    assert result.rc == 24, result.stderr
    lines = result.stderr.splitlines()
    [error] = [line for line in lines if line.startswith("labhop: error: ")]
    assert "did not answer within 1 s on gpubox" in error
    if error.endswith("the last lines of its log:"):
        assert lines[lines.index(error) + 1:], result.stderr  # the log lines follow
        assert lines[lines.index(error) + 1].startswith("  | "), result.stderr
    else:
        assert error.endswith("(its log is empty)"), result.stderr


def test_an_explicit_port_that_is_taken_is_an_error(sshd: Sshd) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_labhop(
            "-F", str(sshd.config), "gpubox", "--no-browser", "--port", str(port), timeout=60
        )
    assert result.rc == 25
    assert f"local port {port} is already in use" in result.stderr
    assert wait_until_no_user_processes() == []


def test_a_taken_default_port_is_replaced_with_a_line_saying_so(sshd: Sshd) -> None:
    with socket.socket() as busy:
        # SO_REUSEADDR: earlier tests leave connections to this port in TIME_WAIT.
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", preferred_port("gpubox", "proj")))
        busy.listen()
        with start(sshd, "gpubox", "--name", "proj") as labhop:
            url = labhop.wait_for(URL, timeout=90)
            assert (
                f"local port {preferred_port('gpubox', 'proj')} is busy; using {url['port']}"
                in labhop.output
            )
            stop_with_ctrl_c(labhop)


@pytest.fixture(scope="module")
def nostream_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """An sshd that refuses forwarding to Unix sockets, as some hardened hosts do."""
    with start_sshd(tmp_path_factory.mktemp("nostream"), host_alias="nostream",
                    sshd_options={"AllowStreamLocalForwarding": "no"}) as server:
        yield server


def test_falls_back_to_loopback_tcp_when_sshd_refuses_socket_forwarding(
    sshd: Sshd, nostream_sshd: Sshd
) -> None:
    with start(nostream_sshd, "nostream", "--name", "proj") as labhop:
        url = labhop.wait_for(URL, timeout=90)
        assert "refuses Unix-socket forwarding" in labhop.output
        output, _ = jupyter_api.execute(f"http://127.0.0.1:{url['port']}", url["token"],
                                        "print(40 + 2)")
        assert output.strip() == "42"
        endpoint = (STATE / "proj" / "endpoint").read_text().strip()
        host, _, remote_port = endpoint.removeprefix("tcp:").rpartition(":")
        assert host == "127.0.0.1"
        assert listening_addresses(int(remote_port)) == {"127.0.0.1"}
        assert processes_with_in_cmdline(url["token"]) == []
        stop_with_ctrl_c(labhop)


def browser_env(tmp_path: Path, script: str) -> dict[str, str]:
    """Environment in which Python's webbrowser (and so labhop) runs `script` as the
    browser, with the page's URL as $1; DISPLAY makes labhop believe a desktop is there."""
    browser = tmp_path / "browser"
    browser.write_text("#!/bin/sh\n" + script)
    browser.chmod(0o755)
    return {"BROWSER": f"{browser} %s", "DISPLAY": ":99"}


def wait_for_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.1)


def test_the_browser_gets_a_private_redirect_page_not_the_token(sshd: Sshd,
                                                                tmp_path: Path) -> None:
    """Python's webbrowser runs $BROWSER; this one records what it was given, the way a real
    browser would receive it, and copies the page it was asked to open."""
    record = tmp_path / "browser.txt"
    env = browser_env(tmp_path, f'printf "%s\\n" "$*" > {record}\n'
                      f'page="${{1#file://}}"; stat -c %a "$page" >> {record}; '
                      f'cat "$page" >> {record}\n')
    with LabhopProcess.start("-F", str(sshd.config), "gpubox", "--name", "proj",
                             env_overrides=env) as labhop:
        url = labhop.wait_for(URL, timeout=90)
        wait_for_file(record, timeout=10)
        argv, mode, *page = record.read_text().splitlines()
        assert argv.startswith("file:///") and url["token"] not in argv
        assert mode == "600"
        assert f"http://127.0.0.1:{url['port']}/lab?token={url['token']}" in "\n".join(page)
        stop_with_ctrl_c(labhop)


def test_the_users_own_forwards_and_remote_command_do_not_get_in_the_way(
    sshd: Sshd, tmp_path: Path
) -> None:
    """Someone who did the manual routine before has `LocalForward 8888 ...` for the host,
    often with that port busy, and perhaps a RemoteCommand; labhop must not trip on them."""
    block = sshd.config.read_text().split("\nHost ")[0]
    assert block.startswith("Host gpubox\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        config = tmp_path / "ssh_config"
        config.write_text(block.replace("Host gpubox\n", "Host habits\n")
                          + f"    LocalForward 127.0.0.1:{taken} 127.0.0.1:22\n"
                          + "    RemoteCommand echo this-is-not-labhop\n")
        with LabhopProcess.start("-F", str(config), "habits", "--name", "proj",
                                 "--no-browser") as labhop:
            url = labhop.wait_for(URL, timeout=90)
            status = jupyter_api.api_status(f"http://127.0.0.1:{url['port']}", url["token"])
            assert "started" in status
            stop_with_ctrl_c(labhop)


def test_a_host_profile_supplies_the_usual_options(sshd: Sshd) -> None:
    config_dir = Path(os.environ["LABHOP_CONFIG_DIR"])
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.toml").write_text(
        '[defaults]\nidle_timeout = "2h"\n'
        '[hosts.gpubox]\nenv = "venv:~/jvenv"\ndir = "~/proj"\nno_browser = true\n')
    # No --env, no --dir, no --no-browser: all from the profile.
    with LabhopProcess.start("-F", str(sshd.config), "gpubox") as labhop:
        url = labhop.wait_for(URL, timeout=90)
        output, _ = jupyter_api.execute(f"http://127.0.0.1:{url['port']}", url["token"],
                                        "import os, sys; print(os.getcwd(), sys.prefix)")
        assert output.split() == [str(HOME / "proj"), str(HOME / "jvenv")]
        record = json.loads((STATE / "proj" / "launch.json").read_text())
        assert (record["env"], record["idle_timeout"]) == ("venv:~/jvenv", 7200)
        stop_with_ctrl_c(labhop)
    # A command-line option still wins over the profile.
    result = run_labhop("-F", str(sshd.config), "gpubox", "--dir", "~/no-such-dir")
    assert result.rc == 22


def test_a_bad_config_file_is_one_line_naming_it(sshd: Sshd) -> None:
    config_dir = Path(os.environ["LABHOP_CONFIG_DIR"])
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.toml").write_text('[hosts.gpubox]\nidle_timeout = "forever"\n')
    result = run_labhop("-F", str(sshd.config), "gpubox", "--no-browser")
    assert result.rc == 3
    assert f"idle_timeout = 'forever' ([hosts.gpubox] in {config_dir}/config.toml)" \
        in result.stderr
    assert "Traceback" not in result.stderr

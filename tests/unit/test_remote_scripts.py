"""The remote scripts, run for real by the local `sh` in a throwaway HOME.

These exercise the shell logic (activation failures, sentinel exit codes, state files,
quoting) without ssh or Jupyter; the end-to-end tests cover those.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labhop import model
from labhop.backends.base import entry_kinds, script_failure
from labhop.errors import EnvNotFoundError, RemoteError
from labhop.remote import compose, jupyter, protocol, scripts

# The scripts as the backends compose them: with every registered backend's entry shell.
KINDS = entry_kinds()


def launch_script(req: jupyter.LaunchRequest) -> compose.Script:
    return scripts.launch_script(req, kinds=KINDS)


def list_script(name: str = "", **flags: bool) -> compose.Script:
    return scripts.list_script(name, kinds=KINDS, **flags)



def run_sh(script: compose.Script | str, home: Path, path_prefix: str = ""
           ) -> subprocess.CompletedProcess[str]:
    env = {
        "HOME": str(home),
        "PATH": f"{path_prefix}:/usr/bin:/bin" if path_prefix else "/usr/bin:/bin",
    }
    return subprocess.run(
        ["sh", "-s"],
        input=script.text if isinstance(script, compose.Script) else script,
        text=True,
        capture_output=True,
        env=env,
        cwd=home,
        timeout=30,
        check=False,
    )


def request(**overrides: object) -> jupyter.LaunchRequest:
    values: dict[str, object] = {
        "name": "proj",
        "server_id": "0123456789abcdef",
        "token": "f" * 48,
        "record": {"name": "proj"},
    }
    values.update(overrides)
    return jupyter.LaunchRequest(**values)  # type: ignore[arg-type]


def fake_venv(path: Path, *, with_jupyter: bool) -> None:
    """A venv-shaped directory; its `jupyter-lab` is a stub that just sleeps."""
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "activate").write_text(
        f'VIRTUAL_ENV="{path}"; PATH="{path}/bin:$PATH"; export VIRTUAL_ENV PATH\n'
    )
    if with_jupyter:
        stub = path / "bin" / "jupyter-lab"
        stub.write_text("#!/bin/sh\nexec sleep 30\n")
        stub.chmod(0o755)


def test_parse_env_spec_accepts_every_kind() -> None:
    assert model.parse_env_spec("conda:pytorch") == model.EnvSpec("conda", "pytorch")
    assert model.parse_env_spec("venv:~/envs/a") == model.EnvSpec("venv", "~/envs/a")
    assert model.parse_env_spec("module:cuda/12,python") == model.EnvSpec(
        "module", "cuda/12,python"
    )
    assert model.parse_env_spec("cmd:. ~/x.sh ") == model.EnvSpec("cmd", ". ~/x.sh ")


@pytest.mark.parametrize("text", ["pytorch", "docker:x", "conda:", "venv:  "])
def test_parse_env_spec_rejects_with_the_forms_to_use(text: str) -> None:
    with pytest.raises(Exception, match="conda:NAME, mamba:NAME"):
        model.parse_env_spec(text)


def test_token_and_values_are_quoted_once_and_never_expanded() -> None:
    script = launch_script(request(root_dir="~/it's $HOME; rm -rf /"))
    assert "token=" + "f" * 48 in script.text
    assert "root_dir='~/it'\"'\"'s $HOME; rm -rf /'" in script.text


def test_parse_output_ignores_noise_and_keeps_the_log() -> None:
    text = "Welcome to gamer!\nlabhop:alive=0\nlabhop:listening=1\nlabhop:log-begin\nTraceback\n  x"
    output = protocol.parse_output(text, protocol.STATUS_KEYS)
    assert output.fields == {"alive": "0", "listening": "1"}
    assert output.log == "Traceback\n  x"


def test_missing_venv_is_env_not_found(tmp_path: Path) -> None:
    result = run_sh(launch_script(request(env=model.EnvSpec("venv", "~/nope"))), tmp_path)
    assert result.returncode == protocol.Exit.ENV_NOT_FOUND
    assert f"no virtualenv at {tmp_path}/nope" in result.stdout
    assert not (tmp_path / ".local/state/labhop/servers/proj").exists()


def test_failures_name_the_host_as_typed_and_a_job_its_node(tmp_path: Path) -> None:
    """`gamer` is the user's ssh alias; the remote calls itself something else (`vm`)."""
    result = run_sh(launch_script(request(env=model.EnvSpec("venv", "~/nope"))), tmp_path)
    error = script_failure(result.stdout, result.stderr, result.returncode, "starting Jupyter",
                           host="gamer")
    assert isinstance(error, EnvNotFoundError)
    assert str(error) == (f"no virtualenv at {tmp_path}/nope on gamer (bin/activate is "
                          f"missing); create it with python3 -m venv {tmp_path}/nope")
    # A Slurm job fails on a compute node no one named: it names the node itself.
    job = run_sh(scripts.slurm_job_script(request()), tmp_path)
    assert protocol.parse_failure(job.stdout).get("error").startswith(
        f"labhop state {tmp_path}/.local/state/labhop/servers/proj is missing on "
        f"{os.uname().nodename};")


def test_venv_without_jupyter_is_jupyter_not_found(tmp_path: Path) -> None:
    fake_venv(tmp_path / "env", with_jupyter=False)
    elsewhere = tmp_path / "other"
    fake_venv(elsewhere, with_jupyter=True)
    result = run_sh(
        launch_script(request(env=model.EnvSpec("venv", "~/env"))),
                              tmp_path,
                              path_prefix=str(elsewhere / "bin"),
    )
    assert result.returncode == protocol.Exit.JUPYTER_NOT_FOUND
    assert "belongs to another environment" in result.stdout


def test_missing_root_dir(tmp_path: Path) -> None:
    fake_venv(tmp_path / "env", with_jupyter=True)
    script = launch_script(
        request(env=model.EnvSpec("venv", "~/env"), root_dir="~/missing")
    )
    result = run_sh(script, tmp_path)
    assert result.returncode == protocol.Exit.ROOT_DIR_MISSING
    assert f"server root {tmp_path}/missing does not exist" in result.stdout


def test_conda_without_any_install_is_env_not_found(tmp_path: Path) -> None:
    result = run_sh(launch_script(request(env=model.EnvSpec("conda", "torch"))), tmp_path)
    assert result.returncode == protocol.Exit.ENV_NOT_FOUND
    assert "conda not found" in result.stdout


def test_local_home_prefix_is_read_relative_to_the_remote_home(tmp_path: Path) -> None:
    home = tmp_path / "remote-home"
    (home / "proj").mkdir(parents=True)
    fake_venv(home / "env", with_jupyter=True)
    script = launch_script(
        request(
            env=model.EnvSpec("venv", "/Users/me/env"),
            root_dir="/Users/me/proj",
            local_home="/Users/me",
        )
    )
    result = run_sh(script, home)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        output = protocol.parse_output(result.stdout, protocol.LAUNCH_KEYS)
        state = home / ".local/state/labhop/servers/proj"
        assert output.get("existing") == "0"
        assert (state / "pid").read_text().strip() == output.get("pid")
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert stat.S_IMODE((state / "token").stat().st_mode) == 0o600
        assert (state / "token").read_text() == "f" * 48
        endpoint = output.get("endpoint")
        assert endpoint.startswith(f"unix:/tmp/labhop-{os.getuid()}/0123456789abcdef.sock")

        again = protocol.parse_output(run_sh(script, home).stdout, protocol.LAUNCH_KEYS)
        assert again.get("existing") == "1"
        assert again.get("pid") == output.get("pid")

        stopped = run_sh(scripts.stop_script("proj"), home)
        fields = protocol.parse_output(stopped.stdout, protocol.STOP_KEYS)
        assert fields.get("was_running") == "1"
        assert fields.get("stopped") == "1"
        assert not state.exists()
    finally:
        pid = home / ".local/state/labhop/servers/proj/pid"
        if pid.exists():
            os.kill(int(pid.read_text()), 9)


def test_stop_with_another_launch_id_leaves_the_server_alone(tmp_path: Path) -> None:
    state = tmp_path / ".local/state/labhop/servers/proj"
    state.mkdir(parents=True)
    (state / "id").write_text("someone-else")
    result = run_sh(scripts.stop_script("proj", expect_id="mine"), tmp_path)
    assert protocol.parse_output(result.stdout, protocol.STOP_KEYS).get("known") == "0"
    assert state.exists()


def test_cull_interval_follows_short_timeouts() -> None:
    assert jupyter.cull_interval(20) == 5
    assert jupyter.cull_interval(3600) == 300


def test_websocket_pings_find_a_dead_tab_well_within_the_idle_timeout() -> None:
    assert jupyter.websocket_ping(60) == (6, 18)
    assert jupyter.websocket_ping(20) == (5, 15)  # no faster than every 5 s
    assert jupyter.websocket_ping(6 * 3600) == (30, 90)  # Jupyter's own, at most
    assert jupyter.websocket_ping(0) == (30, 90)  # no idle timeout: Jupyter's own
    for idle in range(50, 10000, 7):
        interval, timeout = jupyter.websocket_ping(idle)
        # closed at the 4th ping without a pong, plus tornado's 5 s close handshake
        assert timeout == 3 * interval and 4 * interval + 5 <= idle / 2


def recording_jupyter(path: Path, flavour: str) -> None:
    """A venv whose jupyter-lab records its argv (one per line) and whose python answers
    the flavour question with `flavour` (the transport word filled in)."""
    fake_venv(path, with_jupyter=False)
    (path / "bin" / "jupyter-lab").write_text(
        '#!/bin/sh\nprintf "%s\\n" "$@" > "$HOME/argv.tmp"; mv "$HOME/argv.tmp" "$HOME/argv"\n'
        "exec sleep 30\n")
    (path / "bin" / "python").write_text(f'#!/bin/sh\necho "{flavour}"\n')
    for name in ("jupyter-lab", "python"):
        (path / "bin" / name).chmod(0o755)


def launched_argv(home: Path, **overrides: object) -> list[str]:
    result = run_sh(launch_script(request(env=model.EnvSpec("venv", "~/env"),
                                          server_id=f"ws{os.getpid()}{home.name}"[-16:],
                                          **overrides)), home)
    pid = int(protocol.parse_output(result.stdout, protocol.LAUNCH_KEYS).get("pid"))
    try:
        for _ in range(100):
            if (home / "argv").exists():
                break
            time.sleep(0.05)
        return (home / "argv").read_text().splitlines()
    finally:
        os.kill(pid, 9)


@pytest.mark.parametrize(("flavour", "idle", "expected"), [
    # jupyter_server >= 2.13, short idle timeout: both kinds of pings, scaled.
    ("ServerApp unix 1 1", 60, [
        '--ServerApp.tornado_settings={"ws_ping_interval": 6000, "ws_ping_timeout": 18000}',
        "--ServerApp.websocket_ping_interval=6", "--ServerApp.websocket_ping_timeout=18"]),
    # A long idle timeout: Jupyter's own kernel pings are enough; config files keep theirs.
    ("ServerApp unix 1 1", 3600, [
        "--ServerApp.websocket_ping_interval=30", "--ServerApp.websocket_ping_timeout=90"]),
    # An older server (or a flavour.py of two words) does not know the ServerApp options.
    ("ServerApp unix 0 0", 60, [
        '--ServerApp.tornado_settings={"ws_ping_interval": 6000, "ws_ping_timeout": 18000}']),
    ("ServerApp unix", 3600, []),
    # Classic notebook < 7 pings kernels the same way, under its own name.
    ("NotebookApp unix 0 0", 100, [
        '--NotebookApp.tornado_settings={"ws_ping_interval": 10000, '
        '"ws_ping_timeout": 30000}']),
])
def test_the_jupyter_command_line_pings_websockets_as_the_server_allows(
        tmp_path: Path, flavour: str, idle: int, expected: list[str]) -> None:
    recording_jupyter(tmp_path / "env", flavour)
    argv = launched_argv(tmp_path, idle_timeout=idle,
                         jupyter_args=("--ServerApp.tornado_settings={}",))
    assert [arg for arg in argv if "_ping_" in arg] == expected
    assert argv[-1] == "--ServerApp.tornado_settings={}"  # the user's own -- args win


@pytest.mark.parametrize(("version", "ping", "idp"), [
    ("1.24.0", "0", "0"), ("2.0.0", "0", "1"), ("2.12.5", "0", "1"), ("2.13.0", "1", "1"),
    ("2.21.1", "1", "1"), (None, "0", "0")])
def test_flavour_knows_which_servers_take_websocket_ping_options_and_browser_tokens(
        tmp_path: Path, version: str | None, ping: str, idp: str) -> None:
    """flavour.py, run by a real python over a site dir holding only jupyter_server's
    metadata at `version` (None: not installed)."""
    if version is not None:
        info = tmp_path / f"jupyter_server-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: jupyter_server\n"
                                       f"Version: {version}\n")
    done = subprocess.run([sys.executable, "-S", "-c", compose.body("flavour.py"), "lab", "unix"],
                          env={"PYTHONPATH": str(tmp_path)}, capture_output=True, text=True,
                          check=True, timeout=30)
    assert done.stdout.split() == ["ServerApp", "unix", ping, idp]


def test_list_describes_every_running_server_and_cleans_dead_ones(tmp_path: Path) -> None:
    fake_venv(tmp_path / "env", with_jupyter=True)
    pids = []
    try:
        for name, server_id in (("one", "a" * 16), ("two", "b" * 16)):
            script = launch_script(request(name=name, server_id=server_id,
                                           env=model.EnvSpec("venv", "~/env")))
            launched = protocol.parse_output(run_sh(script, tmp_path).stdout, protocol.LAUNCH_KEYS)
            pids.append(int(launched.get("pid")))
        dead = tmp_path / ".local/state/labhop/servers/dead"
        dead.mkdir()
        (dead / "id").write_text("c" * 16)
        (dead / "pid").write_text("999999999\n")

        entries, cleaned = protocol.parse_entries(run_sh(list_script(), tmp_path).stdout)
        assert [entry.name for entry in entries] == ["one", "two"]
        assert [entry.pid for entry in entries] == [str(pid) for pid in pids]
        assert entries[0].root == str(tmp_path)
        assert entries[0].record == {"name": "proj"}
        assert entries[0].token == ""
        assert cleaned == ["dead"]
        assert not dead.exists()

        only, _ = protocol.parse_entries(
            run_sh(list_script("two", with_token=True), tmp_path).stdout)
        assert [(entry.name, entry.token) for entry in only] == [("two", "f" * 48)]
    finally:
        for pid in pids:
            os.kill(pid, 9)


def test_status_reports_alive_and_the_log_tail_and_exits_0(tmp_path: Path) -> None:
    fake_venv(tmp_path / "env", with_jupyter=True)
    unknown = run_sh(scripts.status_script("proj"), tmp_path)
    assert unknown.returncode == 0
    assert protocol.parse_output(unknown.stdout, protocol.STATUS_KEYS).get("known") == "0"
    launched = protocol.parse_output(
        run_sh(launch_script(request(env=model.EnvSpec("venv", "~/env"))),
                                     tmp_path).stdout, protocol.LAUNCH_KEYS)
    try:
        (tmp_path / ".local/state/labhop/servers/proj/log").write_text("line 1\nline 2\n")
        plain = run_sh(scripts.status_script("proj"), tmp_path)
        assert plain.returncode == 0
        assert protocol.parse_output(plain.stdout, protocol.STATUS_KEYS).get("alive") == "1"
        with_log = run_sh(scripts.status_script("proj", with_log=True, log_lines=1), tmp_path)
        assert with_log.returncode == 0
        assert protocol.parse_output(with_log.stdout, protocol.STATUS_KEYS).log == "line 2"
    finally:
        os.kill(int(launched.get("pid")), 9)


def test_module_names_are_loaded_literally_never_globbed(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    module = bin_dir / "module"
    module.write_text('#!/bin/sh\nprintf \'%s\\n\' "$@" > "$HOME/module-args"\n')
    module.chmod(0o755)
    (tmp_path / "notes.txt").write_text("")  # what `*` would match in the working directory
    script = launch_script(request(env=model.parse_env_spec("module:*,cuda/12")))
    result = run_sh(script, tmp_path, path_prefix=str(bin_dir))
    assert (tmp_path / "module-args").read_text().splitlines() == ["load", "*", "cuda/12"]
    assert "module load" not in result.stdout  # loading worked; Jupyter is what is missing


def without_proc(script: compose.Script) -> str:
    """The script as it runs on a host without /proc (macOS, BSD)."""
    assert script.text.count("\nproc_dir=/proc\n") == 1
    return script.text.replace("\nproc_dir=/proc\n", "\nproc_dir=/nonexistent-proc\n")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped) still answers signal 0.
    with open(f"/proc/{pid}/stat") as stat_file:
        return stat_file.read().rsplit(") ", 1)[1][0] not in "ZX"


def test_without_proc_the_recorded_start_time_proves_the_server(tmp_path: Path) -> None:
    fake_venv(tmp_path / "env", with_jupyter=True)
    script = launch_script(request(env=model.EnvSpec("venv", "~/env")))
    launched = run_sh(without_proc(script), tmp_path)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    pid = int(protocol.parse_output(launched.stdout, protocol.LAUNCH_KEYS).get("pid"))
    state = tmp_path / ".local/state/labhop/servers/proj"
    try:
        assert (state / "start").read_text().strip()
        status = run_sh(without_proc(scripts.status_script("proj")), tmp_path)
        assert protocol.parse_output(status.stdout, protocol.STATUS_KEYS).get("alive") == "1"
        listed = run_sh(without_proc(list_script()), tmp_path)
        entries, _ = protocol.parse_entries(listed.stdout)
        assert [entry.pid for entry in entries] == [str(pid)]

        stopped = protocol.parse_output(
            run_sh(without_proc(scripts.stop_script("proj")), tmp_path).stdout,
            protocol.STOP_KEYS)
        assert stopped.get("was_running") == "1"
        assert stopped.multi["signal"] == ["TERM"]
        assert not alive(pid)
        assert not state.exists()
    finally:
        if alive(pid):
            os.kill(pid, 9)


@pytest.mark.parametrize("recorded", ["Thu_Jan_1_00:00:00_1970", None])
def test_without_proc_a_reused_pid_is_never_signalled(tmp_path: Path, recorded: str | None) -> None:
    # Another program now has the PID the state names; nothing proves it is the server.
    stranger = subprocess.Popen(["sleep", "30"])
    state = tmp_path / ".local/state/labhop/servers/proj"
    state.mkdir(parents=True)
    (state / "id").write_text("0123456789abcdef")
    (state / "pid").write_text(f"{stranger.pid}\n")
    if recorded is not None:
        (state / "start").write_text(recorded + "\n")
    try:
        status = run_sh(without_proc(scripts.status_script("proj")), tmp_path)
        assert protocol.parse_output(status.stdout, protocol.STATUS_KEYS).get("alive") == "0"
        stopped = protocol.parse_output(
            run_sh(without_proc(scripts.stop_script("proj", term_s=0)),
                   tmp_path).stdout, protocol.STOP_KEYS)
        assert stopped.get("was_running") == "0"
        assert stopped.multi["signal"] == []
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_normal_launch_records_the_servers_start_time(tmp_path: Path) -> None:
    fake_venv(tmp_path / "env", with_jupyter=True)
    launched = protocol.parse_output(
        run_sh(launch_script(request(env=model.EnvSpec("venv", "~/env"))),
                                     tmp_path).stdout, protocol.LAUNCH_KEYS)
    pid = int(launched.get("pid"))
    try:
        state = tmp_path / ".local/state/labhop/servers/proj"
        with open(f"/proc/{pid}/stat") as stat_file:
            ticks = stat_file.read().rsplit(") ", 1)[1].split()[19]
        assert (state / "start").read_text().strip() == ticks
    finally:
        os.kill(pid, 9)


def test_no_start_passes_the_unrecognised_no_browser_open_file() -> None:
    host = launch_script(request())
    job = scripts.slurm_job_script(request(transport="tcp"))
    submit = scripts.slurm_submit_script(request(transport="tcp"), ("-p", "gpu"), kinds=KINDS)
    for script in (host, job, submit):
        assert "--no-browser" in script.text
        assert "no_browser_open_file" not in script.text


def runtime_dir(server_id: str) -> Path:
    """Where the scripts keep a server's Jupyter runtime dir: node-local, as run_base says."""
    return Path(f"/tmp/labhop-{os.getuid()}") / f"{server_id}.rt"  # noqa: S108


def remove_tree(path: Path) -> None:
    if path.exists():
        for child in path.iterdir():
            child.unlink()
        path.rmdir()


def fake_slurm(bin_dir: Path) -> None:
    """squeue that lists no job (it has ended) and an scancel that does nothing."""
    bin_dir.mkdir(exist_ok=True)
    for name in ("squeue", "scancel"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)


def test_stopping_a_slurm_server_removes_its_runtime_dir(tmp_path: Path) -> None:
    server_id = f"unit-{os.getpid()}-{tmp_path.name}"
    runtime = runtime_dir(server_id)
    runtime.mkdir(parents=True)
    (runtime / "jupyter_cookie_secret").write_text("secret")
    state = tmp_path / ".local/state/labhop/servers/proj"
    state.mkdir(parents=True)
    for name, text in (("id", server_id), ("backend", "slurm\n"), ("jobid", "42\n"),
                       ("token", "t")):
        (state / name).write_text(text)
    fake_slurm(tmp_path / "bin")
    try:
        stopped = protocol.parse_output(
            run_sh(scripts.slurm_stop_script("proj"), tmp_path, str(tmp_path / "bin")).stdout,
            protocol.STOP_KEYS)
        assert stopped.get("stopped") == "1"
        assert not runtime.exists()
        assert not state.exists()
    finally:
        remove_tree(runtime)


# A stand-in for Jupyter given port 0: it listens where the system puts it, says where in its
# runtime file (as jupyter_server does, json.dump with indent=2), and serves until TERM.
LISTENER = """
import json, os, signal, socket, time
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
path = os.path.join(os.environ["JUPYTER_RUNTIME_DIR"], f"jpserver-{os.getpid()}.json")
with open(path, "w") as f:
    json.dump({"port": sock.getsockname()[1], "pid": os.getpid()}, f, indent=2)
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
time.sleep(30)
"""


def test_a_slurm_job_removes_its_runtime_dir_when_jupyter_ends(tmp_path: Path) -> None:
    server_id = f"unit-{os.getpid()}-{tmp_path.name}"
    runtime = runtime_dir(server_id)
    env = tmp_path / "env"
    fake_venv(env, with_jupyter=False)
    # Jupyter's part: write the cookie secret into its runtime dir, then serve until TERM.
    # It listens on a port of its own choosing, as a real one given --ServerApp.port=0.
    (env / "bin" / "jupyter-lab").write_text(
        '#!/bin/sh\nmkdir -p "$JUPYTER_RUNTIME_DIR"\n'
        'printf secret > "$JUPYTER_RUNTIME_DIR/jupyter_cookie_secret"\n'
        f'exec {sys.executable} -c {shlex.quote(LISTENER)}\n')
    (env / "bin" / "python").write_text("#!/bin/sh\necho ServerApp tcp 0 0\n")
    for name in ("jupyter-lab", "python"):
        (env / "bin" / name).chmod(0o755)
    state = tmp_path / ".local/state/labhop/servers/proj"
    state.mkdir(parents=True)
    (state / "token").write_text("t")
    script = scripts.slurm_job_script(request(server_id=server_id, transport="tcp",
                                             env=model.EnvSpec("venv", "~/env")))
    job = subprocess.Popen(["sh", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                           env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert job.stdin is not None
    job.stdin.write(script.text)
    job.stdin.close()
    jupyter = 0
    try:
        for _ in range(100):
            if (runtime / "jupyter_cookie_secret").exists() and (state / "endpoint").exists():
                break
            time.sleep(0.1)
        assert (runtime / "jupyter_cookie_secret").exists()
        jupyter = int((state / "pid").read_text())
        assert jupyter != job.pid
        port = json.loads((runtime / f"jpserver-{jupyter}.json").read_text())["port"]
        assert (state / "endpoint").read_text().strip().endswith(f":{port}")
        job.send_signal(signal.SIGTERM)  # as scancel does
        job.wait(timeout=15)
        assert not alive(jupyter)
        assert not runtime.exists()
    finally:
        if job.poll() is None:
            job.kill()
        job.wait()
        if jupyter and alive(jupyter):
            os.kill(jupyter, 9)
        remove_tree(runtime)


# -- the run directory: /tmp/labhop-UID, or a private fallback when that is not ours ------
def with_run_root(script: compose.Script, base: Path) -> str:
    """The script with its run directory under `base` instead of /tmp."""
    assert script.text.count("\nrun_root=/tmp\n") == 1
    return script.text.replace("\nrun_root=/tmp\n", f"\nrun_root={base}\n")


def socket_stub(path: Path) -> None:
    """A venv whose jupyter-lab makes its socket and runtime dir as Jupyter would."""
    fake_venv(path, with_jupyter=False)
    stub = path / "bin" / "jupyter-lab"
    stub.write_text('#!/bin/sh\nfor a; do case $a in --ServerApp.sock=*) : > "${a#*=}" ;; '
                    'esac; done\nmkdir -p "$JUPYTER_RUNTIME_DIR"\n'
                    'printf x > "$JUPYTER_RUNTIME_DIR/jupyter_cookie_secret"\nexec sleep 30\n')
    stub.chmod(0o755)


@pytest.fixture
def run_root() -> Iterator[Path]:
    """A short base for run directories (a socket path must stay under 100 bytes)."""
    base = Path(tempfile.mkdtemp(prefix="lhb-", dir="/tmp"))
    try:
        yield base
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def taken(base: Path, how: str) -> Path:
    """Make $base/labhop-UID unusable for us, the way `how` says."""
    usual = base / f"labhop-{os.getuid()}"
    if how == "another user's":
        if os.getuid() != 0:
            pytest.skip("making a directory another user's needs root")
        usual.mkdir(mode=0o700)
        os.chown(usual, 65534, 65534)
    elif how == "a symlink":
        (base / "elsewhere").mkdir(mode=0o700)
        usual.symlink_to(base / "elsewhere")
    else:  # a plain file
        usual.write_text("")
    return usual


@pytest.mark.parametrize("how", ["another user's", "a symlink", "a file"])
def test_launch_falls_back_to_a_private_dir_and_stop_removes_it(
        tmp_path: Path, run_root: Path, how: str) -> None:
    usual = taken(run_root, how)
    socket_stub(tmp_path / "env")
    script = launch_script(request(env=model.EnvSpec("venv", "~/env")))
    launched = run_sh(with_run_root(script, run_root), tmp_path)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    output = protocol.parse_output(launched.stdout, protocol.LAUNCH_KEYS)
    pid = int(output.get("pid"))
    state = tmp_path / ".local/state/labhop/servers/proj"
    try:
        [fallback] = [p for p in run_root.iterdir() if p.name.startswith(f"{usual.name}.")]
        assert len(fallback.name) >= len(usual.name) + 9  # `.` and 8 random characters
        info = fallback.lstat()
        assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == os.getuid()
        assert output.get("endpoint") == f"unix:{fallback}/0123456789abcdef.sock"
        assert (state / "rundir").read_text() == f"{fallback}\n"
        for _ in range(50):
            if (fallback / "0123456789abcdef.rt" / "jupyter_cookie_secret").exists():
                break
            time.sleep(0.1)
        assert (fallback / "0123456789abcdef.rt" / "jupyter_cookie_secret").exists()

        stopped = run_sh(with_run_root(scripts.stop_script("proj"), run_root), tmp_path)
        assert protocol.parse_output(stopped.stdout, protocol.STOP_KEYS).get("stopped") == "1"
        assert not fallback.exists()
        assert not state.exists()
        assert usual.exists() or usual.is_symlink()  # someone else's: never touched
    finally:
        if alive(pid):
            os.kill(pid, 9)


def test_launch_keeps_its_own_usual_dir_and_makes_it_private(
        tmp_path: Path, run_root: Path) -> None:
    usual = run_root / f"labhop-{os.getuid()}"
    usual.mkdir(mode=0o755)
    usual.chmod(0o755)
    socket_stub(tmp_path / "env")
    script = launch_script(request(env=model.EnvSpec("venv", "~/env")))
    output = protocol.parse_output(
        run_sh(with_run_root(script, run_root), tmp_path).stdout, protocol.LAUNCH_KEYS)
    pid = int(output.get("pid"))
    try:
        assert output.get("endpoint") == f"unix:{usual}/0123456789abcdef.sock"
        assert stat.S_IMODE(usual.stat().st_mode) == 0o700
        assert [p.name for p in run_root.iterdir()] == [usual.name]
        run_sh(with_run_root(scripts.stop_script("proj"), run_root), tmp_path)
        assert usual.exists()  # the usual one is shared by every server: it stays
        assert list(usual.iterdir()) == []
    finally:
        if alive(pid):
            os.kill(pid, 9)


def test_stopping_a_slurm_server_removes_its_recorded_fallback_dir(
        tmp_path: Path, run_root: Path) -> None:
    taken(run_root, "a file")
    fallback = run_root / f"labhop-{os.getuid()}.Ab3dE6gH"
    (fallback / "0123456789abcdef.rt").mkdir(parents=True, mode=0o700)
    state = tmp_path / ".local/state/labhop/servers/proj"
    state.mkdir(parents=True)
    for name, text in (("id", "0123456789abcdef"), ("backend", "slurm\n"), ("jobid", "42\n"),
                       ("rundir", f"{fallback}\n")):
        (state / name).write_text(text)
    fake_slurm(tmp_path / "bin")
    stopped = run_sh(with_run_root(scripts.slurm_stop_script("proj"), run_root), tmp_path,
                     str(tmp_path / "bin"))
    assert protocol.parse_output(stopped.stdout, protocol.STOP_KEYS).get("stopped") == "1"
    assert not fallback.exists()


@pytest.mark.parametrize("recorded", ["/etc", "{base}/labhop-{uid}./../elsewhere",
                                      "{base}/other"])
def test_stop_believes_only_a_run_dir_of_ours(
        tmp_path: Path, run_root: Path, recorded: str) -> None:
    victim = run_root / "elsewhere" / "0123456789abcdef.rt"
    victim.mkdir(parents=True)
    (run_root / "other" / "0123456789abcdef.rt").mkdir(parents=True)
    state = tmp_path / ".local/state/labhop/servers/proj"
    state.mkdir(parents=True)
    (state / "id").write_text("0123456789abcdef")
    (state / "rundir").write_text(recorded.format(base=run_root, uid=os.getuid()) + "\n")
    run_sh(with_run_root(scripts.stop_script("proj"), run_root), tmp_path)
    assert victim.exists()
    assert (run_root / "other" / "0123456789abcdef.rt").exists()
    assert not state.exists()


# -- the protocol ---------------------------------------------------------------------------
def test_a_repeated_or_unknown_key_is_refused_naming_it() -> None:
    with pytest.raises(RemoteError, match=r"start script printed 'endpoint' twice.*--debug"):
        protocol.parse_output("labhop:endpoint=unix:/a\nlabhop:endpoint=tcp:127.0.0.1:1\n",
                            protocol.LAUNCH_KEYS)
    with pytest.raises(RemoteError, match=r"the key 'alive', which it never prints"):
        protocol.parse_output("labhop:alive=1\n", protocol.LAUNCH_KEYS)
    with pytest.raises(RemoteError, match="log-begin"):
        protocol.parse_output("labhop:log-begin\nx\n", protocol.LAUNCH_KEYS)
    with pytest.raises(RemoteError, match="malformed value for 'pid'"):
        protocol.parse_output("labhop:pid=1%2\n", protocol.LAUNCH_KEYS)
    with pytest.raises(RemoteError, match="malformed line"):
        protocol.parse_output("labhop:pid\n", protocol.LAUNCH_KEYS)


def test_values_are_decoded_and_lists_are_declared() -> None:
    output = protocol.parse_output(
        "labhop:known=1\nlabhop:signal=TERM\nlabhop:signal=KILL\nlabhop:swept=%0A%25x\n",
        protocol.STOP_KEYS)
    assert output.fields == {"known": "1"}
    assert output.multi == {"signal": ["TERM", "KILL"], "swept": ["\n%x"]}
    assert protocol.decode_value(protocol.encode_value("é\r\n%\x1b")) == "é\r\n%\x1b"


def test_nothing_after_log_begin_is_a_field() -> None:
    text = "labhop:known=1\nlabhop:alive=0\nlabhop:log-begin\nlabhop:alive=1\nlabhop:zzz=1\n"
    output = protocol.parse_output(text, protocol.STATUS_KEYS)
    assert output.get("alive") == "0"
    assert output.log == "labhop:alive=1\nlabhop:zzz=1"


@pytest.mark.parametrize("text", [
    "labhop:begin=a\nlabhop:begin=b\nlabhop:end=b\nlabhop:end=a\n",  # a block in a block
    "labhop:begin=a\nlabhop:pid=1\n",  # never closed
    "labhop:begin=a\nlabhop:end=b\n",  # closed by another name
    "labhop:pid=1\n",  # a field outside any entry
    "labhop:begin=a\nlabhop:pid=1\nlabhop:pid=2\nlabhop:end=a\n",
    "labhop:begin=a\nlabhop:cleaned=b\nlabhop:end=a\n",
    "labhop:begin=a\nlabhop:alive=1\nlabhop:end=a\n",
])
def test_list_blocks_that_labhop_never_prints_are_refused(text: str) -> None:
    with pytest.raises(RemoteError, match="list script printed"):
        protocol.parse_entries(text)


def test_a_failure_is_read_whatever_else_the_script_printed() -> None:
    output = protocol.parse_failure(
        "motd\nlabhop:known=1\nlabhop:error=no%0Aroot\nlabhop:exit=92\n")
    assert (output.get("error"), output.get("exit")) == ("no\nroot", "92")
    with pytest.raises(RemoteError, match="'error' twice"):
        protocol.parse_failure("labhop:error=a\nlabhop:error=b\n")


def slurm_entry(home: Path, name: str = "proj") -> Path:
    state = home / ".local/state/labhop/servers" / name
    state.mkdir(parents=True)
    for file, text in (("id", "0123456789abcdef"), ("backend", "slurm\n"), ("jobid", "42\n"),
                       ("pid", "1\n"), ("token", "t")):
        (state / file).write_text(text)
    return state


def running_squeue(bin_dir: Path) -> None:
    """An squeue that shows job 42 running on node07."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "squeue").write_text("#!/bin/sh\necho 'RUNNING|None|node07|1:00:00'\n")
    (bin_dir / "squeue").chmod(0o755)


def test_the_host_stop_script_leaves_another_backends_server_alone(tmp_path: Path) -> None:
    state = slurm_entry(tmp_path)
    stopped = run_sh(scripts.stop_script("proj"), tmp_path)
    assert protocol.parse_output(stopped.stdout, protocol.STOP_KEYS).get("known") == "0"
    assert (state / "jobid").exists()


def test_list_asks_each_entrys_own_backend_whether_it_is_alive(tmp_path: Path) -> None:
    slurm_entry(tmp_path)
    running_squeue(tmp_path / "bin")
    entries, cleaned = protocol.parse_entries(
        run_sh(list_script(), tmp_path, str(tmp_path / "bin")).stdout)
    assert cleaned == []
    [entry] = entries
    assert (entry.kind, entry.jobid, entry.job) == ("slurm", "42", "RUNNING|None|node07|1:00:00")
    assert entry.kernels is None  # a job's kernels live on its node: not counted here


def test_list_neither_shows_nor_cleans_an_entry_of_an_unknown_backend(tmp_path: Path) -> None:
    state = slurm_entry(tmp_path)
    (state / "backend").write_text("pbs\n")
    entries, cleaned = protocol.parse_entries(run_sh(list_script(), tmp_path).stdout)
    assert (entries, cleaned) == ([], [])
    assert state.exists()


def test_a_launch_refuses_a_name_that_a_live_job_holds(tmp_path: Path) -> None:
    state = slurm_entry(tmp_path)
    running_squeue(tmp_path / "bin")
    result = run_sh(launch_script(request()), tmp_path, str(tmp_path / "bin"))
    assert result.returncode == protocol.Exit.STATE_UNUSABLE, result.stdout
    assert "'proj' already runs as Slurm job 42" in protocol.parse_failure(result.stdout).get(
        "error")
    assert (state / "jobid").exists()


def test_a_job_submission_refuses_a_name_that_a_host_server_holds(tmp_path: Path) -> None:
    fake_venv(tmp_path / "env", with_jupyter=True)
    result = run_sh(launch_script(request(env=model.EnvSpec("venv", "~/env"))), tmp_path)
    pid = int(protocol.parse_output(result.stdout, protocol.LAUNCH_KEYS).get("pid") or 0)
    try:
        assert alive(pid), result.stdout + result.stderr
        submitted = run_sh(scripts.slurm_submit_script(request(transport="tcp"), (), kinds=KINDS),
                           tmp_path)
        assert submitted.returncode == protocol.Exit.STATE_UNUSABLE, submitted.stdout
        assert "already runs on the host itself" in protocol.parse_failure(
            submitted.stdout).get("error")
        assert alive(pid)
    finally:
        if alive(pid):
            os.kill(pid, 9)

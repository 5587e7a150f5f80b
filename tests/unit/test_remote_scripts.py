"""The remote scripts, run for real by the local `sh` in a throwaway HOME.

These exercise the shell logic (activation failures, sentinel exit codes, state files,
quoting) without ssh or Jupyter; the end-to-end tests cover those.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from labhop import remote


def run_sh(script: str, home: Path, path_prefix: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        "HOME": str(home),
        "PATH": f"{path_prefix}:/usr/bin:/bin" if path_prefix else "/usr/bin:/bin",
    }
    return subprocess.run(
        ["sh", "-s"],
        input=script,
        text=True,
        capture_output=True,
        env=env,
        cwd=home,
        timeout=30,
        check=False,
    )


def request(**overrides: object) -> remote.LaunchRequest:
    values: dict[str, object] = {
        "name": "proj",
        "server_id": "0123456789abcdef",
        "token": "f" * 48,
        "record": {"name": "proj"},
    }
    values.update(overrides)
    return remote.LaunchRequest(**values)  # type: ignore[arg-type]


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
    assert remote.parse_env_spec("conda:pytorch") == remote.EnvSpec("conda", "pytorch")
    assert remote.parse_env_spec("venv:~/envs/a") == remote.EnvSpec("venv", "~/envs/a")
    assert remote.parse_env_spec("module:cuda/12,python") == remote.EnvSpec(
        "module", "cuda/12,python"
    )
    assert remote.parse_env_spec("cmd:. ~/x.sh ") == remote.EnvSpec("cmd", ". ~/x.sh ")


@pytest.mark.parametrize("text", ["pytorch", "docker:x", "conda:", "venv:  "])
def test_parse_env_spec_rejects_with_the_forms_to_use(text: str) -> None:
    with pytest.raises(Exception, match="conda:NAME, mamba:NAME"):
        remote.parse_env_spec(text)


def test_token_and_values_are_quoted_once_and_never_expanded() -> None:
    script = remote.launch_script(request(root_dir="~/it's $HOME; rm -rf /"))
    assert "token=" + "f" * 48 in script
    assert "root_dir='~/it'\"'\"'s $HOME; rm -rf /'" in script


def test_parse_output_ignores_noise_and_keeps_the_log() -> None:
    text = "Welcome to gamer!\nlabhop:alive=0\nlabhop:listening=1\nlabhop:log-begin\nTraceback\n  x"
    output = remote.parse_output(text)
    assert output.fields == {"alive": "0", "listening": "1"}
    assert output.log == "Traceback\n  x"


def test_missing_venv_is_env_not_found(tmp_path: Path) -> None:
    result = run_sh(remote.launch_script(request(env=remote.EnvSpec("venv", "~/nope"))), tmp_path)
    assert result.returncode == remote.Exit.ENV_NOT_FOUND
    assert f"no virtualenv at {tmp_path}/nope" in result.stdout
    assert not (tmp_path / ".local/state/labhop/servers/proj").exists()


def test_venv_without_jupyter_is_jupyter_not_found(tmp_path: Path) -> None:
    fake_venv(tmp_path / "env", with_jupyter=False)
    elsewhere = tmp_path / "other"
    fake_venv(elsewhere, with_jupyter=True)
    result = run_sh(
        remote.launch_script(request(env=remote.EnvSpec("venv", "~/env"))),
        tmp_path,
        path_prefix=str(elsewhere / "bin"),
    )
    assert result.returncode == remote.Exit.JUPYTER_NOT_FOUND
    assert "belongs to another environment" in result.stdout


def test_missing_root_dir(tmp_path: Path) -> None:
    fake_venv(tmp_path / "env", with_jupyter=True)
    script = remote.launch_script(
        request(env=remote.EnvSpec("venv", "~/env"), root_dir="~/missing")
    )
    result = run_sh(script, tmp_path)
    assert result.returncode == remote.Exit.ROOT_DIR_MISSING
    assert f"server root {tmp_path}/missing does not exist" in result.stdout


def test_conda_without_any_install_is_env_not_found(tmp_path: Path) -> None:
    result = run_sh(remote.launch_script(request(env=remote.EnvSpec("conda", "torch"))), tmp_path)
    assert result.returncode == remote.Exit.ENV_NOT_FOUND
    assert "conda not found" in result.stdout


def test_local_home_prefix_is_read_relative_to_the_remote_home(tmp_path: Path) -> None:
    home = tmp_path / "remote-home"
    (home / "proj").mkdir(parents=True)
    fake_venv(home / "env", with_jupyter=True)
    script = remote.launch_script(
        request(
            env=remote.EnvSpec("venv", "/Users/me/env"),
            root_dir="/Users/me/proj",
            local_home="/Users/me",
        )
    )
    result = run_sh(script, home)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        output = remote.parse_output(result.stdout)
        state = home / ".local/state/labhop/servers/proj"
        assert output.get("existing") == "0"
        assert (state / "pid").read_text().strip() == output.get("pid")
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert stat.S_IMODE((state / "token").stat().st_mode) == 0o600
        assert (state / "token").read_text() == "f" * 48
        endpoint = output.get("endpoint")
        assert endpoint.startswith(f"unix:/tmp/labhop-{os.getuid()}/0123456789abcdef.sock")

        again = remote.parse_output(run_sh(script, home).stdout)
        assert again.get("existing") == "1"
        assert again.get("pid") == output.get("pid")

        stopped = run_sh(remote.stop_script("proj", grace_s=0), home)
        fields = remote.parse_output(stopped.stdout)
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
    result = run_sh(remote.stop_script("proj", expect_id="mine"), tmp_path)
    assert remote.parse_output(result.stdout).get("known") == "0"
    assert state.exists()


def test_cull_interval_follows_short_timeouts() -> None:
    assert remote.cull_interval(20) == 5
    assert remote.cull_interval(3600) == 300


def test_list_describes_every_running_server_and_cleans_dead_ones(tmp_path: Path) -> None:
    fake_venv(tmp_path / "env", with_jupyter=True)
    pids = []
    try:
        for name, server_id in (("one", "a" * 16), ("two", "b" * 16)):
            script = remote.launch_script(request(name=name, server_id=server_id,
                                                  env=remote.EnvSpec("venv", "~/env")))
            pids.append(int(remote.parse_output(run_sh(script, tmp_path).stdout).get("pid")))
        dead = tmp_path / ".local/state/labhop/servers/dead"
        dead.mkdir()
        (dead / "id").write_text("c" * 16)
        (dead / "pid").write_text("999999999\n")

        entries, cleaned = remote.parse_entries(run_sh(remote.list_script(), tmp_path).stdout)
        assert [entry.name for entry in entries] == ["one", "two"]
        assert [entry.pid for entry in entries] == [str(pid) for pid in pids]
        assert entries[0].root == str(tmp_path)
        assert entries[0].record == {"name": "proj"}
        assert entries[0].token == ""
        assert cleaned == ["dead"]
        assert not dead.exists()

        only, _ = remote.parse_entries(
            run_sh(remote.list_script("two", with_token=True), tmp_path).stdout)
        assert [(entry.name, entry.token) for entry in only] == [("two", "f" * 48)]
    finally:
        for pid in pids:
            os.kill(pid, 9)


def test_status_reports_alive_and_the_log_tail_and_exits_0(tmp_path: Path) -> None:
    fake_venv(tmp_path / "env", with_jupyter=True)
    unknown = run_sh(remote.status_script("proj"), tmp_path)
    assert unknown.returncode == 0
    assert remote.parse_output(unknown.stdout).get("known") == "0"
    launched = remote.parse_output(
        run_sh(remote.launch_script(request(env=remote.EnvSpec("venv", "~/env"))), tmp_path).stdout)
    try:
        (tmp_path / ".local/state/labhop/servers/proj/log").write_text("line 1\nline 2\n")
        plain = run_sh(remote.status_script("proj"), tmp_path)
        assert plain.returncode == 0
        assert remote.parse_output(plain.stdout).get("alive") == "1"
        with_log = run_sh(remote.status_script("proj", with_log=True, log_lines=1), tmp_path)
        assert with_log.returncode == 0
        assert remote.parse_output(with_log.stdout).log == "line 2"
    finally:
        os.kill(int(launched.get("pid")), 9)

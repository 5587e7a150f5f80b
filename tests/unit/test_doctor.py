"""`labhop doctor`: the checks as pure functions on what ssh and the remote printed, and
its remote steps run for real by the local `sh` in a throwaway HOME."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labhop import gpus, model
from labhop.commands import doctor, doctor_checks
from labhop.errors import ExitStatus, HostUnknownError
from labhop.remote import compose, gpu_query, protocol, scripts
from labhop.ssh.target import parse_ssh_g
from tests.labhop_cli import run_labhop
from tests.unit.test_remote_scripts import fake_venv

# ---------------------------------------------------------------------------------------
# Pure checks


def output(**fields: str | list[str]) -> protocol.ScriptOutput:
    """A check script's output with these fields (lists for the repeated keys)."""
    single = {key: value for key, value in fields.items() if isinstance(value, str)}
    multi: dict[str, list[str]] = {key: [] for key in protocol.DOCTOR_CHECK_KEYS.lists}
    multi.update({key: value for key, value in fields.items() if isinstance(value, list)})
    return protocol.ScriptOutput(fields=single, multi=multi)


def test_error_lines_split_into_what_happened_and_what_to_do() -> None:
    assert doctor_checks.split_advice("no virtualenv at /x (bin/activate is missing); create it "
                               "with python3 -m venv /x") == (
        "no virtualenv at /x (bin/activate is missing)", "create it with python3 -m venv /x")
    assert doctor_checks.split_advice("no advice here") == ("no advice here", "")
    check = doctor_checks.from_error("login", HostUnknownError(
        "unknown host 'x': it is neither a Host in your ssh config nor a name DNS knows; "
        "check the spelling or add a Host entry to ~/.ssh/config"))
    assert (check.ok, check.status) == (False, ExitStatus.HOST_UNKNOWN)
    assert check.fix == "check the spelling or add a Host entry to ~/.ssh/config"


def test_a_missing_ssh_client_is_status_9_and_says_how_to_install_it() -> None:
    check = doctor_checks.ssh_client_check(None, "")
    assert (check.ok, check.status) == (False, ExitStatus.SSH_MISSING)
    assert "apt install openssh-client" in check.fix
    found = doctor_checks.ssh_client_check("/usr/bin/ssh", "OpenSSH_9.2p1 Debian-2+deb12u3")
    assert found.ok and found.detail == "OpenSSH_9.2p1 Debian-2+deb12u3 (/usr/bin/ssh)"


G = "user gpu\nhostname 10.0.0.7\nport 2222\ncontrolpath /home/me/.ssh/cm-abc\n"


@pytest.mark.parametrize(("text", "kwargs", "expected"), [
    (G, {"user_master": True}, "gpu@10.0.0.7 port 2222; no jump host; your master at "
                               "/home/me/.ssh/cm-abc is open: labhop rides it"),
    (G + "proxyjump me@login:22\n", {}, "gpu@10.0.0.7 port 2222; through jump host "
                                        "me@login:22; no master runs at your ControlPath "
                                        "/home/me/.ssh/cm-abc: labhop opens its own and "
                                        "closes it when done"),
    ("user a\nhostname h\nport 22\nproxycommand nc %h %p\n", {"labhop_master": True},
     "a@h port 22; through ProxyCommand nc %h %p; labhop's own master is open: reused"),
    ("user a\nhostname h\nport 22\n", {"multiplex": False},
     "a@h port 22; no jump host; no shared connection (each step logs in itself)"),
])
def test_the_config_line_says_where_ssh_goes_and_which_master_is_used(
        text: str, kwargs: dict[str, bool], expected: str) -> None:
    resolved = parse_ssh_g(text)
    values = {"multiplex": True, "user_master": False, "labhop_master": False, **kwargs}
    user_path = resolved.settings.get("controlpath", "")
    check = doctor_checks.config_check(resolved, user_path=user_path, **values)
    assert check.ok and check.detail == expected


@pytest.mark.parametrize(("shell", "expected"), [
    ("/bin/bash", "/bin/bash, run as a login shell (bash -l)"),
    ("/usr/bin/fish", "/usr/bin/fish, run as a login shell (fish -l)"),
    ("/bin/tcsh", "/bin/tcsh does not take `-l -c`, so its login files are not read "
                  "(plain /bin/sh)"),
    ("", "$SHELL is not set, so no login files are read (plain /bin/sh)"),
])
def test_the_login_route_is_the_bootstraps(shell: str, expected: str) -> None:
    assert doctor_checks.login_route(shell) == expected
    # The same list of shells as the bootstrap that really runs the scripts.
    assert f" {'|'.join(compose.LOGIN_SHELLS)}) exec " in compose.REMOTE_LOGIN_BOOTSTRAP


def test_the_shell_line_shows_the_login_path() -> None:
    check = doctor_checks.shell_check(
        output(**{"shell": "/bin/bash", "path": "/opt/x/bin:/usr/bin"}))
    assert check.detail == "/bin/bash, run as a login shell (bash -l); PATH=/opt/x/bin:/usr/bin"


VENV = model.EnvSpec("venv", "~/nope")


def test_no_env_is_the_login_path_and_a_missing_one_is_status_20_with_its_fix() -> None:
    assert doctor_checks.env_check(None, None, "").detail == "login PATH (no --env)"
    missing = doctor_checks.env_check(VENV, (90, "no virtualenv at /h/nope on box (bin/activate is "
                                          "missing); create it with python3 -m venv /h/nope"),
                               "")
    assert (missing.ok, missing.status) == (False, ExitStatus.ENV_NOT_FOUND)
    assert missing.detail == "no virtualenv at /h/nope on box (bin/activate is missing)"
    assert missing.fix == "create it with python3 -m venv /h/nope"
    # Jupyter missing (91) is not the environment's failure.
    assert doctor_checks.env_check(VENV, (91, "jupyter-lab not found"), "").ok is True
    activated = doctor_checks.env_check(VENV, None, "/h/nope")
    assert activated.detail == "venv:~/nope activates (prefix /h/nope)"


def test_jupyter_line_shows_each_version_and_a_missing_jupyter_is_status_21() -> None:
    versions = doctor_checks.parse_versions(
        ["jupyter_server 2.21.1", "jupyterlab 4.6.6", "notebook", "noise line"])
    assert versions == {"jupyter_server": "2.21.1", "jupyterlab": "4.6.6", "notebook": ""}
    found = doctor_checks.jupyter_check("lab", None, "/e/bin/jupyter-lab", versions)
    assert found.detail == ("/e/bin/jupyter-lab: jupyter_server 2.21.1, jupyterlab 4.6.6, "
                            "notebook not installed")
    missing = doctor_checks.jupyter_check("lab", (91, "jupyter-lab not found in venv:~/e on box; "
                                              "install it there (pip install jupyterlab) or "
                                              "pick another --env/--app"), "", {})
    assert (missing.ok, missing.status) == (False, ExitStatus.JUPYTER_NOT_FOUND)
    assert missing.fix == "install it there (pip install jupyterlab) or pick another --env/--app"
    assert doctor_checks.jupyter_check("lab", (90, "no env"), "", {}).ok is None


JS = {"jupyter_server": "2.21.1"}


@pytest.mark.parametrize(("kwargs", "ok", "start"), [
    ({"transport": "unix", "versions": JS, "jupyter_ok": True, "probe": (True, "")}, True,
     "jupyter_server 2.21.1 serves on sockets, and a byte round trip"),
    ({"transport": "unix", "versions": JS, "jupyter_ok": True,
      "probe": (False, "sshd refused to forward to a Unix socket")}, False,
     "sshd refused to forward to a Unix socket"),
    ({"transport": "tcp", "versions": {"jupyter_server": "1.8.0"}, "jupyter_ok": True,
      "probe": (True, "")}, False, "jupyter_server 1.8.0 cannot serve on a Unix socket"),
    ({"transport": "", "versions": {}, "jupyter_ok": False, "probe": (True, "")}, None,
     "sshd forwards to Unix sockets; not checked for Jupyter"),
    ({"transport": "", "versions": {}, "jupyter_ok": False,
      "probe": (False, "sshd refused to forward to a Unix socket")}, False, "sshd refused"),
])
def test_socket_serving_needs_jupyter_server_1_9_and_sshd_forwarding(
        kwargs: dict[str, object], ok: bool | None, start: str) -> None:
    check = doctor_checks.socket_check(**kwargs)  # type: ignore[arg-type]
    assert check.ok is ok
    assert check.detail.startswith(start)
    if ok is False:
        assert check.status == ExitStatus.REMOTE_FAILED
        assert "labhop still works" in check.fix


def test_setsid_and_the_state_directory() -> None:
    assert doctor_checks.setsid_check("/usr/bin/setsid").ok
    missing = doctor_checks.setsid_check("")
    assert missing.ok is False and "util-linux" in missing.fix
    fresh = doctor_checks.state_check(output(state="/h/.local/state/labhop/servers", state_ok="1",
                                      state_existed="0"))
    assert fresh.detail == "/h/.local/state/labhop/servers is writable (created at the first start)"
    refused = doctor_checks.state_check(output(state="/h/s", state_ok="0",
                                        state_error="mkdir: Permission denied"))
    assert (refused.ok, refused.detail) == (False, "/h/s: mkdir: Permission denied")
    assert "XDG_STATE_HOME" in refused.fix


def test_gpus_line_names_them_and_no_nvidia_smi_is_a_note_unless_gpus_are_asked_for() -> None:
    report = gpu_query.parse_report("labhop:user=me\nlabhop:nvidia-smi=ok\n"
                               "labhop:gpu=0, GPU-a, NVIDIA A100, 1, 81920, 0, 30\n"
                               "labhop:gpu=1, GPU-b, NVIDIA A100, 1, 81920, 0, 30\n")
    assert doctor_checks.gpu_check(report, "box").detail == "2 GPUs: 0-1 NVIDIA A100"
    note = doctor_checks.gpu_check(gpus.GpuReport(smi="missing"), "box")
    assert (note.ok, note.status) == (True, ExitStatus.OK)
    assert note.detail.startswith("none: box has no nvidia-smi")
    missing = doctor_checks.gpu_check(gpus.GpuReport(smi="missing"), "box", "auto")
    assert (missing.ok, missing.status) == (False, ExitStatus.NO_GPUS)
    assert missing.detail.startswith("box has no nvidia-smi")
    assert "NVIDIA driver" in missing.fix


@pytest.mark.parametrize(("args", "expected"), [
    ((), ()),
    (("-p", "gpu", "-t", "1:00:00"), ("gpu",)),
    (("-pgpu",), ("gpu",)),
    (("--partition=gpu,debug",), ("gpu", "debug")),
    (("--partition", "a", "-p", "b"), ("b",)),
    (("--gres=gpu:1", "--time=04:00:00"), ()),
])
def test_the_partition_comes_from_the_sbatch_options(args: tuple[str, ...],
                                                     expected: tuple[str, ...]) -> None:
    assert doctor_checks.partitions_of(args) == expected


SLURM = {"command": ["sbatch /usr/bin/sbatch", "squeue /usr/bin/squeue",
                     "scancel /usr/bin/scancel", "sinfo /usr/bin/sinfo"],
         "sinfo_rc": "0", "sinfo": ["debug* up", "gpu up", "old down"]}


@pytest.mark.parametrize(("wanted", "changes", "ok", "detail"), [
    ((), {}, True, "sbatch, squeue, scancel found; default partition debug is up"),
    (("gpu",), {}, True, "sbatch, squeue, scancel found; partition gpu is up"),
    (("nope",), {}, False, "no partition 'nope'; the partitions: debug (default), gpu, old"),
    (("old",), {}, False, "partition old is down"),
    ((), {"sinfo": ["gpu up"]}, False, "no -p in --slurm and the cluster has no default"),
    ((), {"sinfo_rc": "1", "sinfo_error": "Unable to contact slurm controller"}, False,
     "sinfo failed: Unable to contact slurm controller"),
    ((), {"command": ["sbatch ", "squeue /b/squeue", "scancel ", "sinfo "]}, False,
     "not on the login PATH: sbatch, scancel"),
])
def test_slurm_commands_and_partition(wanted: tuple[str, ...], changes: dict[str, object],
                                      ok: bool, detail: str) -> None:
    check = doctor_checks.slurm_check(output(**{**SLURM, **changes}), wanted)  # type: ignore[arg-type]
    assert check.ok is ok
    assert check.detail.startswith(detail), check.detail
    if not ok:
        assert check.status == ExitStatus.SLURM_REFUSED and check.fix


def test_the_exit_status_is_the_first_failures_and_json_has_every_check() -> None:
    report = doctor_checks.Report("box", (
        doctor_checks.passed("ssh", "ok"),
        doctor_checks.skipped("jupyter", "not checked"),
        doctor_checks.failed("env", "no env", "make it", ExitStatus.ENV_NOT_FOUND),
        doctor_checks.failed("gpus", "no gpus", "add some", ExitStatus.NO_GPUS),
    ))
    assert (report.ok, report.exit_status) == (False, ExitStatus.ENV_NOT_FOUND)
    data = json.loads(json.dumps(report.as_json()))
    assert data["exit"] == 20 and data["ok"] is False and data["host"] == "box"
    assert data["checks"][1] == {"name": "jupyter", "ok": None, "detail": "not checked",
                                 "fix": ""}
    clean = doctor_checks.Report("box", (doctor_checks.passed("ssh", "ok"),
                                         doctor_checks.skipped("slurm", "no")))
    assert (clean.ok, clean.exit_status) == (True, ExitStatus.OK)


def test_without_ssh_on_path_the_rest_is_not_checked_and_the_status_is_9(
        tmp_path: Path) -> None:
    result = run_labhop("doctor", "gpubox", "--json", env_overrides={"PATH": str(tmp_path)})
    assert result.rc == 9, result.stderr
    report = json.loads(result.stdout)
    assert [check["ok"] for check in report["checks"]] == [False] + [None] * 10
    assert "openssh-client" in report["checks"][0]["fix"]


# ---------------------------------------------------------------------------------------
# The remote steps, run by the local sh


@pytest.fixture
def run_root() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="lhd-", dir="/tmp"))
    try:
        yield base
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def local_sh(script: compose.Script, home: Path, run_root: Path, path: str
             ) -> subprocess.Popen[str]:
    text = script.text.replace("\nrun_root=/tmp\n", f"\nrun_root={run_root}\n")
    child = subprocess.Popen(["sh", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=home,
                             env={"HOME": str(home), "PATH": path, "SHELL": "/bin/bash"})
    assert child.stdin is not None
    child.stdin.write(text)
    child.stdin.flush()
    return child


def run_check(home: Path, run_root: Path, path: str, **kwargs: object) -> protocol.ScriptOutput:
    child = local_sh(scripts.doctor_script("check", **kwargs), home, run_root,  # type: ignore[arg-type]
                     path)
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr
    return protocol.parse_output(stdout, protocol.DOCTOR_CHECK_KEYS)


def fake_commands(bin_dir: Path, **scripts: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)


def test_the_check_step_reports_and_leaves_nothing_behind(tmp_path: Path,
                                                          run_root: Path) -> None:
    env = tmp_path / "env"
    fake_venv(env, with_jupyter=True)
    # The env's python answers flavour.py's and doctor_probe.py's questions as Jupyter 2 would.
    (env / "bin" / "python").write_text(
        '#!/bin/sh\ncase "$3" in versions) printf "jupyter_server 2.21.1\\njupyterlab 4.6.6\\n'
        'notebook\\n" ;; *) echo ServerApp unix 0 ;; esac\n')
    (env / "bin" / "python").chmod(0o755)
    bin_dir = tmp_path / "bin"
    fake_commands(bin_dir, sbatch="exit 0", squeue="exit 0", scancel="exit 0",
                  sinfo='printf "debug* up\\ngpu up\\n"', setsid="exit 0")
    found = run_check(tmp_path, run_root, f"{bin_dir}:/usr/bin:/bin",
                      env=model.EnvSpec("venv", "~/env"), slurm=True)
    assert found.get("shell") == "/bin/bash"
    assert found.get("path") == f"{bin_dir}:/usr/bin:/bin"
    assert found.get("setsid") == str(bin_dir / "setsid")
    assert (found.get("exe"), found.get("prefix")) == (str(env / "bin/jupyter-lab"), str(env))
    assert found.get("transport") == "unix"
    assert found.multi["version"] == ["jupyter_server 2.21.1", "jupyterlab 4.6.6", "notebook"]
    assert (found.get("state_ok"), found.get("state_existed")) == ("1", "0")
    assert found.multi["sinfo"] == ["debug* up", "gpu up"]
    assert doctor_checks.slurm_check(found, ("gpu",)).ok
    # Created nothing that stays: no state directory, no scratch directory.
    assert not (tmp_path / ".local").exists()
    assert list(run_root.iterdir()) == []


def test_a_missing_env_fails_only_its_checks(tmp_path: Path, run_root: Path) -> None:
    (tmp_path / ".local/state/labhop/servers").mkdir(parents=True)
    found = run_check(tmp_path, run_root, "/usr/bin:/bin", env=model.EnvSpec("venv", "~/nope"))
    assert found.get("exit") == "90"
    assert "no virtualenv at" in found.get("error")
    # The checks after the environment's still ran, and the existing state dir stays.
    assert (found.get("state_ok"), found.get("state_existed")) == ("1", "1")
    assert list((tmp_path / ".local/state/labhop/servers").iterdir()) == []
    assert doctor_checks.env_check(model.EnvSpec("venv", "~/nope"),
                                   doctor_checks.script_error(found, "box"),
                                   "").status == ExitStatus.ENV_NOT_FOUND


def test_an_unusable_state_directory_is_reported(tmp_path: Path, run_root: Path) -> None:
    # A file where the directory should be: refused even for root.
    (tmp_path / ".local").mkdir()
    (tmp_path / ".local/state").write_text("")
    found = run_check(tmp_path, run_root, "/usr/bin:/bin")
    assert found.get("state_ok") == "0"
    assert "File exists" in found.get("state_error") or "Not a directory" in found.get(
        "state_error")
    assert (tmp_path / ".local/state").is_file()


def test_the_listener_answers_until_its_stdin_ends_and_removes_its_directory(
        tmp_path: Path, run_root: Path) -> None:
    import socket  # noqa: PLC0415

    listener = local_sh(scripts.doctor_script("listen", python=sys.executable), tmp_path,
                        run_root, "/usr/bin:/bin")
    try:
        assert listener.stdout is not None
        # The run marker, then the socket and that it listens.
        lines = [listener.stdout.readline().rstrip("\n") for _ in range(3)]
        fields = protocol.parse_output("\n".join(lines), protocol.DOCTOR_LISTEN_KEYS)
        assert fields.get("listening") == "1"
        sock = Path(fields.get("sock"))
        assert sock.parent.parent == run_root
        assert oct(sock.parent.stat().st_mode & 0o777) == "0o700"
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(sock))
            client.sendall(doctor.PING)
            assert client.recv(256) == b"pong " + doctor.PING
        assert listener.stdin is not None
        listener.stdin.close()
        listener.wait(timeout=15)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    for _ in range(50):
        if not list(run_root.iterdir()):
            break
        time.sleep(0.1)
    assert list(run_root.iterdir()) == []

"""Hostile input through every value the remote scripts take, and every one they print back.

The real scripts run in the local `sh` against a throwaway HOME, with stand-ins for
jupyter-lab, conda, micromamba, module, sbatch and nvidia-smi that record exactly what
they were given. Each value must come out exactly as it went in, or be refused with a
clean error; none may run anything: the payloads that would run a command name a marker
file that must never appear (checked after every test).
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from labhop import gpus, model
from labhop.backends.base import script_failure
from labhop.config import options, profiles
from labhop.config.options import Given
from labhop.errors import CommandLineError, LabhopError
from labhop.remote import gpu_query, protocol, scripts
from tests import fake_nvidia_smi
from tests.unit.test_remote_scripts import KINDS, alive, launch_script, list_script, request, run_sh

SERVER_ID = "0123456789abcdef"
GPU_UUID = "GPU-0fd630f1-f29d-4da9-953f-48f1a09f76b5"


def checked_name(name: str) -> str:
    """A server name as `--name` takes it: checked by the one rule (config.options)."""
    if not name:
        raise CommandLineError("bad --name '': it names a directory on the remote")
    return options.resolve("gamer", {"name": Given(name, "--name")},
                           config=profiles.Profiles(Path("/nonexistent"))).name


def payloads(mark: Path) -> dict[str, str]:
    """Values a file name, an option or a program's output could hold, by name."""
    return {
        "command-substitution": f"$(touch {mark})",
        "backticks": f"`touch {mark}`",
        "single-quotes": f"'; touch {mark}; echo '",
        "double-quotes": f'"; touch {mark}; echo "',
        "newline-command": f"x\ntouch {mark}\n",
        "forged-endpoint": "proj\nlabhop:endpoint=tcp:127.0.0.1:9",
        "labhop-prefix": "labhop:endpoint=tcp:127.0.0.1:9",
        "forged-block": "a\nlabhop:end=proj\nlabhop:begin=evil\nlabhop:pid=1",
        "forged-log": "a\nlabhop:log-begin\nlabhop:pid=1",
        "carriage-return": "x\rlabhop:pid=1",
        "leading-dashes": "--help",
        "dash-n": "-n",
        "percent-escapes": "%41%0A%",
        "glob": "*",
        "variables": "${HOME}$PATH~",
        "unicode-line-separator": "é\u2028labhop:pid=1",
        "control-characters": "\x1b[31m\x01\x7f",
        "long": "x" * 3000,
        "trailing-newline": "end\n",
        "spaces": "  two  spaces  ",
    }


NAMES = list(payloads(Path("/m")))
# The processes each test's HOME started (see the `home` fixture and `fake_server`).
home_children: dict[Path, list[subprocess.Popen[str]]] = {}


@pytest.fixture
def mark(tmp_path: Path) -> Iterator[Path]:
    """The file a payload would create if any script ran it."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a hostile value was run as a command"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """The throwaway HOME; every server a test started there is killed afterwards."""
    path = tmp_path / "home"
    path.mkdir()
    children: list[subprocess.Popen[str]] = []
    home_children[path] = children
    try:
        yield path
    finally:
        for child in children:
            child.kill()
            child.wait()
        for pid_file in (path / ".local/state/labhop/servers").glob("*/pid"):
            pid = pid_file.read_text().strip()
            if pid.isdigit() and alive(int(pid)):
                os.kill(int(pid), 9)
        del home_children[path]


def as_path(value: str) -> str:
    """`value` as a relative path that a file system takes: no empty or long parts."""
    parts = []
    for part in value.split("/"):
        parts += [part[i:i + 200] for i in range(0, len(part), 200)] or ["_"]
    return "/".join(part if part not in (".", "..") else f"_{part}" for part in parts)


def recording_venv(path: Path) -> None:
    """A venv whose jupyter-lab records how it was run (NUL-separated), then serves."""
    (path / "bin").mkdir(parents=True)
    bin_dir = shlex.quote(str(path / "bin"))
    (path / "bin" / "activate").write_text(f"PATH={bin_dir}:$PATH; export PATH\n")
    stub = path / "bin" / "jupyter-lab"
    stub.write_text(
        "#!/bin/sh\n"
        "printf '%s\\0' \"$0\" \"$@\" > \"$HOME/argv.tmp\"\n"
        "printf '%s' \"${CUDA_VISIBLE_DEVICES-}\" > \"$HOME/cuda\"\n"
        "mv \"$HOME/argv.tmp\" \"$HOME/argv\"\n"
        "exec sleep 30\n")
    stub.chmod(0o755)
    # Answers the flavour question (python -c CODE APP TRANSPORT) without a real Python.
    (path / "bin" / "python").write_text('#!/bin/sh\necho "ServerApp $4 0"\n')
    (path / "bin" / "python").chmod(0o755)


def recorded(path: Path) -> list[str]:
    """What a stand-in recorded with printf '%s\\0'."""
    for _ in range(100):
        if path.exists():
            break
        time.sleep(0.05)
    return path.read_bytes().decode().split("\0")[:-1]


def state_of(home: Path, name: str) -> Path:
    return home / ".local/state/labhop/servers" / name


def fake_server(home: Path, name: str, files: dict[str, str] | None = None) -> int:
    """A state dir for `name` whose pid is a live process carrying the server id."""
    child = subprocess.Popen(["sleep", "60"], env={"LABHOP_SERVER_ID": SERVER_ID,
                                                   "PATH": "/usr/bin:/bin"})
    home_children[home].append(child)
    state = state_of(home, name)
    state.mkdir(parents=True)
    (state / "id").write_text(SERVER_ID)
    (state / "pid").write_text(f"{child.pid}\n")
    for file_name, text in (files or {}).items():
        (state / file_name).write_text(text)
    return child.pid


def unique_id() -> str:
    """A server id no other test uses: its socket and runtime dir are in the shared /tmp."""
    return uuid.uuid4().hex[:16]


def failure(result: subprocess.CompletedProcess[str]) -> str:
    """The script's `labhop:error=` message; no other field may be forged beside it."""
    assert not any(line.startswith("labhop:") and not line.startswith(
        ("labhop:error=", "labhop:exit=", protocol.RUN_MARKER))
        for line in result.stdout.split("\n"))
    return protocol.parse_failure(result.stdout).get("error")


# -- what a launch takes: --dir, a server name, jupyter args, the record, --gpus, a client --
@pytest.mark.parametrize("case", NAMES)
def test_a_launch_uses_every_value_literally(home: Path, mark: Path, case: str) -> None:
    value = payloads(mark)[case]
    try:
        name = checked_name(value) if len(value) < 200 else "proj"
    except LabhopError:
        name = "proj"  # refused, cleanly (see test_server_names_are_checked_first)
    root = home / as_path(value)
    root.mkdir(parents=True)
    recording_venv(home / "env")
    args = (value, f"--ServerApp.x={value}")
    record = {"name": value, "root_dir": value}
    server_id = unique_id()
    launch = launch_script(request(
        name=name, server_id=server_id, env=model.EnvSpec("venv", "~/env"),
        root_dir=str(root), local_home=value, jupyter_args=args, record=record,
        cuda_visible_devices=f"MIG-{value}"))
    result = run_sh(launch, home)
    assert result.returncode == 0, result.stdout + result.stderr
    started = protocol.parse_output(result.stdout, protocol.LAUNCH_KEYS)
    sock = f"/tmp/labhop-{os.getuid()}/{server_id}.sock"  # noqa: S108 -- the usual run dir
    assert started.get("endpoint") == f"unix:{sock}"

    argv = recorded(home / "argv")
    assert argv[-2:] == list(args)
    assert f"--ServerApp.root_dir={os.path.realpath(root)}" in argv
    assert (home / "cuda").read_bytes().decode() == f"MIG-{value}"

    # The attach marker a labhop holds while attached, with its client string.
    owner = subprocess.Popen(["sh", "-s"], stdin=subprocess.PIPE, text=True, cwd=home,
                             env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    home_children[home].append(owner)
    assert owner.stdin is not None
    owner.stdin.write(scripts.owner_script(name, value, "5e55" * 4, "b" * 48).text)
    owner.stdin.flush()
    session = state_of(home, name) / "owners" / ("5e55" * 4)
    for _ in range(100):
        if session.exists() and session.with_name(f"{session.name}.client").exists():
            break
        time.sleep(0.05)

    [entry], cleaned = protocol.parse_entries(
        run_sh(list_script(with_token=True, with_kernels=False), home).stdout)
    assert cleaned == []
    assert entry.name == name
    assert entry.root == os.path.realpath(root)
    assert entry.endpoint == f"unix:{sock}"
    assert entry.record == record
    assert entry.owner == value
    assert entry.token == "f" * 48
    owner.stdin.close()
    owner.wait(timeout=10)

    stopped = run_sh(scripts.stop_script(name), home)
    assert protocol.parse_output(stopped.stdout, protocol.STOP_KEYS).get("stopped") == "1"
    assert not state_of(home, name).exists()


def test_the_reported_forged_endpoint_is_never_believed(home: Path) -> None:
    """The colleague's reproduction: a folder name that prints an endpoint of its own."""
    root = home / "proj\nlabhop:endpoint=tcp:127.0.0.1:9"
    root.mkdir()
    recording_venv(home / "env")
    launch = launch_script(request(server_id=unique_id(),
                                   env=model.EnvSpec("venv", "~/env"),
                                   root_dir=str(root)))
    assert run_sh(launch, home).returncode == 0
    listed = run_sh(list_script(), home).stdout
    assert not [line for line in listed.split("\n") if line.startswith("labhop:endpoint=tcp:")]
    [entry], _ = protocol.parse_entries(listed)
    assert entry.endpoint.startswith("unix:/tmp/")
    assert entry.root == str(root)


@pytest.mark.parametrize("case", NAMES)
def test_a_path_to_open_is_looked_up_literally(home: Path, mark: Path, case: str) -> None:
    """`labhop HOST PATH`: a PATH that is there opens as itself; one that is not is named
    literally in one error, and nothing was started."""
    value = payloads(mark)[case]
    recording_venv(home / "env")
    root = home / "root"
    missing = launch_script(request(server_id=unique_id(), env=model.EnvSpec("venv", "~/env"),
                                    root_dir=str(root), open_path=value))
    root.mkdir()
    result = run_sh(missing, home)
    assert result.returncode == protocol.Exit.ROOT_DIR_MISSING, result.stdout + result.stderr
    assert value in protocol.parse_failure(result.stdout).get("error")
    assert not (home / "argv").exists()  # Jupyter never ran
    assert not mark.exists()
    if "/" in value.rstrip("/") or len(value) > 255 or value in (".", ".."):
        return  # not one file name: the normalisation and the check above cover it
    (root / value).write_text("{}")
    there = launch_script(request(server_id=unique_id(), env=model.EnvSpec("venv", "~/env"),
                                  root_dir=str(root), open_path=value))
    found = protocol.parse_output(run_sh(there, home).stdout, protocol.LAUNCH_KEYS)
    assert (found.get("open_path"), found.get("open_kind")) == (value, "file")
    assert not mark.exists()


@pytest.mark.parametrize("case", NAMES)
def test_server_names_are_checked_first(mark: Path, case: str) -> None:
    value = payloads(mark)[case]
    allowed = all(c.isalnum() or c in "-_." for c in value) and not value.startswith(".")
    if allowed:
        assert checked_name(value) == value
    else:
        with pytest.raises(LabhopError, match="bad --name"):
            checked_name(value)


@pytest.mark.parametrize("case", NAMES)
def test_a_missing_dir_is_named_literally_in_the_error(home: Path, mark: Path,
                                                       case: str) -> None:
    missing = home / as_path(payloads(mark)[case])
    recording_venv(home / "env")
    result = run_sh(launch_script(request(server_id=unique_id(),
                                          env=model.EnvSpec("venv", "~/env"),
                                          root_dir=str(missing))), home)
    assert result.returncode == protocol.Exit.ROOT_DIR_MISSING
    assert f"server root {missing} does not exist on " in failure(result)


# -- --env, every kind ------------------------------------------------------------------------
def env_spec(kind: str, value: str) -> model.EnvSpec:
    """`--env KIND:VALUE` as the command line parses it (it strips the value)."""
    return model.parse_env_spec(f"{kind}:{value}")


@pytest.mark.parametrize("case", NAMES)
def test_a_venv_path_is_used_literally(home: Path, mark: Path, case: str) -> None:
    spec = env_spec("venv", str(home / as_path(payloads(mark)[case])))
    recording_venv(Path(spec.value))
    result = run_sh(launch_script(request(server_id=unique_id(), env=spec)), home)
    if ":" in spec.value:
        # Its bin cannot go on $PATH (`:` separates PATH's entries), so there is no
        # jupyter-lab in it: refused, naming the venv as given.
        assert result.returncode == protocol.Exit.JUPYTER_NOT_FOUND
        assert f"jupyter-lab not found in venv:{spec.value} on " in failure(result)
        return
    assert result.returncode == 0, result.stdout + result.stderr
    assert recorded(home / "argv")[0] == f"{spec.value}/bin/jupyter-lab"
    protocol.parse_output(result.stdout, protocol.LAUNCH_KEYS)


@pytest.mark.parametrize("case", NAMES)
def test_a_missing_venv_is_named_literally(home: Path, mark: Path, case: str) -> None:
    spec = env_spec("venv", str(home / as_path(payloads(mark)[case])))
    result = run_sh(launch_script(request(server_id=unique_id(), env=spec)), home)
    assert result.returncode == protocol.Exit.ENV_NOT_FOUND
    assert failure(result).startswith(f"no virtualenv at {spec.value} on ")


def fake_conda(home: Path, *, works: bool) -> None:
    """conda.sh whose `conda` records its arguments; activate works, or says not found."""
    profile = home / "miniforge3/etc/profile.d"
    profile.mkdir(parents=True)
    recording_venv(home / "condaenv")
    then = ('CONDA_PREFIX=$HOME/condaenv; PATH=$HOME/condaenv/bin:$PATH; '
            'export CONDA_PREFIX PATH' if works else
            "printf 'EnvironmentNameNotFound: %s\\n' \"$2\" >&2; return 1")
    (profile / "conda.sh").write_text(
        "conda() {\n"
        "    printf '%s\\0' \"$@\" > \"$HOME/conda-args\"\n"
        f"    {then}\n"
        "}\n")


@pytest.mark.parametrize("kind", ["conda", "mamba"])
@pytest.mark.parametrize("case", NAMES)
def test_a_conda_env_name_is_passed_literally(home: Path, mark: Path, case: str,
                                              kind: str) -> None:
    spec = env_spec(kind, payloads(mark)[case])
    fake_conda(home, works=True)
    result = run_sh(launch_script(request(server_id=unique_id(), env=spec)), home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert recorded(home / "conda-args") == ["activate", spec.value]
    protocol.parse_output(result.stdout, protocol.LAUNCH_KEYS)


@pytest.mark.parametrize("case", NAMES)
def test_a_missing_conda_env_is_named_literally(home: Path, mark: Path, case: str) -> None:
    spec = env_spec("conda", payloads(mark)[case])
    fake_conda(home, works=False)
    result = run_sh(launch_script(request(server_id=unique_id(), env=spec)), home)
    assert result.returncode == protocol.Exit.ENV_NOT_FOUND
    assert f"conda environment '{spec.value}' not found on " in failure(result)


@pytest.mark.parametrize("case", NAMES)
def test_a_micromamba_env_name_is_passed_literally(home: Path, mark: Path, case: str) -> None:
    spec = env_spec("micromamba", payloads(mark)[case])
    recording_venv(home / "condaenv")
    bin_dir = home / "bin"
    bin_dir.mkdir()
    (bin_dir / "micromamba").write_text(
        "#!/bin/sh\n"
        "[ \"$1\" = shell ] || exit 1\n"
        "cat <<'HOOK'\n"
        "micromamba() {\n"
        "    printf '%s\\0' \"$@\" > \"$HOME/mm-args\"\n"
        "    CONDA_PREFIX=$HOME/condaenv; PATH=$HOME/condaenv/bin:$PATH\n"
        "    export CONDA_PREFIX PATH\n"
        "}\n"
        "HOOK\n")
    (bin_dir / "micromamba").chmod(0o755)
    script = launch_script(request(server_id=unique_id(), env=spec))
    result = run_sh(script, home, path_prefix=str(bin_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert recorded(home / "mm-args") == ["activate", spec.value]


@pytest.mark.parametrize("case", NAMES)
def test_module_names_are_passed_literally(home: Path, mark: Path, case: str) -> None:
    spec = env_spec("module", payloads(mark)[case])
    bin_dir = home / "bin"
    bin_dir.mkdir()
    (bin_dir / "module").write_text("#!/bin/sh\nprintf '%s\\0' \"$@\" > \"$HOME/module-args\"\n")
    (bin_dir / "module").chmod(0o755)
    script = launch_script(request(server_id=unique_id(), env=spec))
    result = run_sh(script, home, path_prefix=str(bin_dir))
    assert recorded(home / "module-args") == ["load", *spec.value.split(",")]
    # The stand-in loads nothing, so Jupyter is missing: said with the names as given.
    assert result.returncode == protocol.Exit.JUPYTER_NOT_FOUND
    assert f"jupyter-lab not found in module:{spec.value} on " in failure(result)


def test_a_cmd_env_cannot_print_protocol_lines(home: Path) -> None:
    """cmd: is shell text run on purpose; what it prints is never read as a field."""
    recording_venv(home / "env")
    activate = shlex.quote(str(home / "env/bin/activate"))
    spec = env_spec("cmd", "echo labhop:endpoint=tcp:127.0.0.1:9; "
                           "printf 'x\\nlabhop:pid=1\\n'; echo labhop:exit=0 >&2; "
                           f". {activate}")
    result = run_sh(launch_script(request(server_id=unique_id(), env=spec)), home)
    assert result.returncode == 0, result.stdout + result.stderr
    started = protocol.parse_output(result.stdout, protocol.LAUNCH_KEYS)
    assert started.get("endpoint").startswith("unix:")
    assert started.get("pid") != "1"


@pytest.mark.parametrize("case", NAMES)
def test_a_failing_cmd_env_is_reported_literally(home: Path, mark: Path, case: str) -> None:
    value = payloads(mark)[case]
    (home / "said").write_text(value)
    spec = env_spec("cmd", "cat \"$HOME/said\" >&2; false")
    result = run_sh(launch_script(request(server_id=unique_id(), env=spec)), home)
    assert result.returncode == protocol.Exit.ENV_NOT_FOUND
    # The last line it wrote to stderr, as `tail -n 1 | tr -d '\r'` takes it.
    last = (value if not value.endswith("\n") else value[:-1]).split("\n")[-1]
    assert failure(result).endswith(f"failed on {protocol.HOST_PLACEHOLDER}: "
                                    f"{last.replace(chr(13), '')}")
    # As the user reads it: on the host as typed, the command's own words unchanged.
    error = script_failure(result.stdout, result.stderr, result.returncode, "starting Jupyter",
                           host="gamer")
    assert str(error).endswith(f"failed on gamer: {last.replace(chr(13), '')}")


# -- Slurm: sbatch options in, sbatch's complaints out -------------------------------------
def fake_sbatch(bin_dir: Path, *, refuse: str | None = None) -> None:
    """sbatch that records its arguments and the script on stdin, then submits job 42;
    with `refuse`, it prints that as its error instead (from a file, byte for byte)."""
    bin_dir.mkdir(exist_ok=True)
    if refuse is None:
        body = ("printf '%s\\0' \"$@\" > \"$HOME/sbatch-args\"\n"
                "cat > \"$HOME/job.sh\"\necho '42;cluster'\n")
    else:
        (bin_dir / "refusal").write_text(refuse)
        body = f"cat >/dev/null\ncat {shlex.quote(str(bin_dir / 'refusal'))} >&2\nexit 1\n"
    (bin_dir / "sbatch").write_text("#!/bin/sh\n" + body)
    (bin_dir / "sbatch").chmod(0o755)


@pytest.mark.parametrize("case", NAMES)
def test_sbatch_options_are_passed_literally(home: Path, mark: Path, case: str) -> None:
    value = payloads(mark)[case]
    fake_sbatch(home / "bin")
    options = (value, f"--comment={value}")
    script = scripts.slurm_submit_script(request(transport="tcp", record={"x": value}),
                                        options, kinds=KINDS)
    result = run_sh(script, home, path_prefix=str(home / "bin"))
    assert result.returncode == 0, result.stdout + result.stderr
    submitted = protocol.parse_output(result.stdout, protocol.SUBMIT_KEYS)
    assert (submitted.get("existing"), submitted.get("jobid")) == ("0", "42")
    state = state_of(home, "proj")
    assert recorded(home / "sbatch-args") == [
        "--parsable", "--job-name=labhop-proj", f"--output={state}/log",
        "--open-mode=append", *options]
    assert json.loads((state / "launch.json").read_text()) == {"x": value}


@pytest.mark.parametrize("case", NAMES)
def test_sbatch_refusals_are_reported_literally(home: Path, mark: Path, case: str) -> None:
    value = payloads(mark)[case]
    fake_sbatch(home / "bin", refuse=f"sbatch: error: {value}\nsbatch: error: Batch job "
                                     "submission failed\n")
    script = scripts.slurm_submit_script(request(transport="tcp"), (), kinds=KINDS)
    result = run_sh(script, home, path_prefix=str(home / "bin"))
    assert result.returncode == protocol.Exit.SLURM_REFUSED
    first = value.split("\n")[0]
    assert failure(result) == f"Slurm refused the job: {first}"


# -- what the scripts print back: log lines, state files, ls entries -----------------------
def hostile_log(mark: Path) -> str:
    lines = [*payloads(mark).values(), "labhop:alive=0", "labhop:known=0", "labhop:log-begin",
             "labhop:job_error=forged", "labhop:begin=evil"]
    return "\n".join(lines) + "\n"


def test_log_lines_are_shown_raw_and_never_read_as_fields(home: Path, mark: Path) -> None:
    text = hostile_log(mark)
    fake_server(home, "proj", {"endpoint": "unix:/nonexistent.sock\n", "log": text})
    expected = "\n".join(text.splitlines())

    status = protocol.parse_output(
        run_sh(scripts.status_script("proj", with_log=True, log_lines=10000), home).stdout,
        protocol.STATUS_KEYS)
    assert (status.get("known"), status.get("alive"), status.get("listening")) == (
        "1", "1", "0")
    assert status.log == expected

    logs = protocol.parse_output(run_sh(scripts.logs_script("proj", lines=10000), home).stdout,
                               protocol.LOGS_KEYS)
    assert logs.get("known") == "" and logs.log == expected


def test_a_jobs_log_never_says_why_it_failed(home: Path, mark: Path) -> None:
    """Only the failure the job's own script recorded counts, never a line of its log."""
    state = state_of(home, "proj")
    state.mkdir(parents=True)
    (state / "backend").write_text("slurm\n")
    (state / "jobid").write_text("42\n")
    (state / "log").write_text(hostile_log(mark))
    (home / "bin").mkdir()
    for tool in ("squeue", "scancel"):
        (home / "bin" / tool).write_text("#!/bin/sh\nexit 0\n")
        (home / "bin" / tool).chmod(0o755)
    script = scripts.slurm_status_script("proj", with_log=True, log_lines=10000)
    fields = protocol.parse_output(run_sh(script, home, str(home / "bin")).stdout,
                                 protocol.JOB_STATUS_KEYS)
    assert fields.get("job_error") == "" and fields.get("job") == ""
    assert fields.log == "\n".join(hostile_log(mark).splitlines())

    (state / "failure").write_text(f"90\n{payloads(mark)['forged-endpoint']}\n")
    fields = protocol.parse_output(run_sh(script, home, str(home / "bin")).stdout,
                                 protocol.JOB_STATUS_KEYS)
    assert fields.get("job_exit") == "90"
    assert fields.get("job_error") == payloads(mark)["forged-endpoint"]


def test_a_failing_job_records_why_for_the_login_node(home: Path, mark: Path) -> None:
    missing = home / as_path(payloads(mark)["forged-block"])
    state = state_of(home, "proj")
    state.mkdir(parents=True)
    script = scripts.slurm_job_script(request(server_id=unique_id(), transport="tcp",
                                             env=model.EnvSpec("venv", str(missing))))
    result = run_sh(script, home)
    assert result.returncode == protocol.Exit.ENV_NOT_FOUND
    code, message = (state / "failure").read_text().split("\n", 1)
    assert code == "90"
    assert message.startswith(f"no virtualenv at {missing} on ")
    assert failure(result) == message.removesuffix("\n")


@pytest.mark.parametrize("case", NAMES)
def test_ls_entries_hold_what_the_state_says_literally(home: Path, mark: Path,
                                                       case: str) -> None:
    value = payloads(mark)[case]
    name = as_path(value).replace("/", "_")[:200]
    fake_server(home, name, {"endpoint": f"{value}\n", "root": f"{value}\n",
                             "node": f"{value}\n", "token": value,
                             "launch.json": json.dumps({"name": value}) + "\n"})
    fake_server(home, "zz-second", {"endpoint": "unix:/s.sock\n"})
    listed = run_sh(list_script(with_token=True, with_kernels=False), home)
    entries, cleaned = protocol.parse_entries(listed.stdout)
    assert cleaned == []
    assert sorted(entry.name for entry in entries) == sorted([name, "zz-second"])
    [entry] = [entry for entry in entries if entry.name == name]
    assert entry.endpoint == value
    assert entry.root == value
    assert entry.record == {"name": value}
    # `node` (from `hostname > node`) and `token` (hex, from labhop) are read as plain
    # values: $(...) drops the newlines that end them.
    assert entry.node == value.rstrip("\n")
    assert entry.token == value.rstrip("\n")


def test_a_dead_server_with_a_hostile_name_is_cleaned_literally(home: Path,
                                                                mark: Path) -> None:
    name = as_path(payloads(mark)["forged-block"])
    state = state_of(home, name)
    state.mkdir(parents=True)
    (state / "id").write_text(unique_id())
    (state / "pid").write_text("999999999\n")
    entries, cleaned = protocol.parse_entries(run_sh(list_script(), home).stdout)
    assert (entries, cleaned) == ([], [name])
    assert not state.exists()


# -- GPUs: nvidia-smi's process names and messages, and server names --------------------
def query(home: Path) -> gpus.GpuReport:
    result = subprocess.run(["sh", "-s"], input=gpu_query.query_script().text, text=True,
                            capture_output=True, cwd=home, timeout=60, check=False,
                            env={"HOME": str(home), "PATH": f"{home}/bin:/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    return gpu_query.parse_report(result.stdout)


def test_gpu_process_names_come_back_literally(home: Path, mark: Path) -> None:
    names = list(payloads(mark).values())
    apps = "".join(f"{GPU_UUID}, {1000 + i}, {name}, {i}\n" for i, name in enumerate(names))
    fake_nvidia_smi.install(home / "bin", "rtx4090-2x", apps=apps)
    found = query(home)
    assert found.smi == "ok"
    assert found.user == pwd.getpwuid(os.getuid()).pw_name
    # CSV fields are trimmed of surrounding blanks (nvidia-smi pads them); nothing else.
    assert [(p.pid, p.process_name) for p in found.processes] == [
        (1000 + i, name.strip()) for i, name in enumerate(names)]
    assert [p.used_memory_mib for p in found.processes] == list(range(len(names)))


@pytest.mark.parametrize("case", NAMES)
def test_nvidia_smi_failures_are_reported_literally(home: Path, mark: Path, case: str) -> None:
    value = payloads(mark)[case]
    (home / "bin").mkdir()
    (home / "said").write_text(f"\n{value}\nlabhop:user=evil\n")
    (home / "bin" / "nvidia-smi").write_text('#!/bin/sh\ncat "$HOME/said"\nexit 9\n')
    (home / "bin" / "nvidia-smi").chmod(0o755)
    found = query(home)
    assert found.smi == "failed"
    assert found.user == pwd.getpwuid(os.getuid()).pw_name
    assert found.message == next(line for line in value.split("\n") if line.strip(" \t\r"))


def test_a_gpu_kernel_of_a_hostile_server_name_is_named_literally(home: Path,
                                                                  mark: Path) -> None:
    name = as_path(payloads(mark)["forged-block"]) + " "
    pid = fake_server(home, name)
    apps = f"{GPU_UUID}, {pid}, /usr/bin/python3, 512\n"
    fake_nvidia_smi.install(home / "bin", "rtx4090-2x", apps=apps)
    [process] = query(home).processes
    assert (process.pid, process.server) == (pid, name)

"""The scripts labhop runs on the remote, one builder each.

Pure functions: values in, a `Script` (its text, the keys it prints, how it runs) out.
Scripts go to the remote on ssh's stdin (see `ssh.transport`), so the token inside them is
never on a command line.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping

from labhop.model import DEFAULT_APP, EnvSpec
from labhop.remote.compose import Script, assign, body, script
from labhop.remote.compose import kinds as compose_kinds
from labhop.remote.jupyter import LaunchRequest, launch_values
from labhop.remote.protocol import (
    DOCTOR_CHECK_KEYS,
    DOCTOR_HELLO_KEYS,
    DOCTOR_LISTEN_KEYS,
    JOB_KEYS,
    JOB_STATUS_KEYS,
    LAUNCH_KEYS,
    LIST_KEYS,
    LOGS_KEYS,
    OWNER_KEYS,
    STATUS_KEYS,
    STOP_KEYS,
    SUBMIT_KEYS,
    Keys,
)


def launch_script(request: LaunchRequest, *, kinds: Mapping[str, str]) -> Script:
    """Start the named server detached, or report the one already running under that name
    (refusing the name while another backend's server holds it: `kinds`, see `compose.kinds`)."""
    kinds_assignment, entry_shells = compose_kinds(kinds)
    return script(LAUNCH_KEYS,
                  assign(**launch_values(request), open_path=request.open_path)
                  + kinds_assignment, entry_shells, body("activate.sh"), body("prepare.sh"),
                  body("open_path.sh"), body("launch.sh"), login=True)


def gpus_script(keys: Keys, *, gpu_fields: str, app_fields: str, smi_timeout: int) -> Script:
    """Ask nvidia-smi about GPUs and processes, in the login environment (nvidia-smi and
    CUDA often come from modules or a PATH set in the login files); `keys` and parsing
    are remote.gpu_query's."""
    assignments = assign(gpu_fields=gpu_fields, app_fields=app_fields, smi_timeout=smi_timeout)
    return script(keys, assignments, body("gpus.sh"), login=True)


# How long a Slurm command may take, and the listener may live, at most.
DOCTOR_COMMAND_TIMEOUT_S = 15
DOCTOR_LISTEN_S = 60


def doctor_script(part: str, *, env: EnvSpec | None = None, app: str = DEFAULT_APP,
                  slurm: bool = False, python: str = "", local_home: str = "") -> Script:
    """One step of `labhop doctor` (`part`: "hello", "check" or "listen").

    "check" activates `env` and looks for Jupyter with the very values and functions a
    launch uses (launch_values, activate.sh, prepare.sh); "listen" runs `python` as a
    Unix-socket listener until the script's stdin ends.
    """
    keys = {"hello": DOCTOR_HELLO_KEYS, "check": DOCTOR_CHECK_KEYS,
            "listen": DOCTOR_LISTEN_KEYS}[part]
    values: dict[str, object] = {}
    bodies: tuple[str, ...] = ()
    if part == "check":
        # Nothing is started: the name, id and token only fill the launch's shape.
        request = LaunchRequest(name="doctor", server_id="doctor", token="", app=app,
                                env=env, local_home=local_home)
        values = {**launch_values(request), "slurm": int(slurm),
                  "cmd_timeout": DOCTOR_COMMAND_TIMEOUT_S}
        bodies = (body("activate.sh"), body("prepare.sh"))
    elif part == "listen":
        values = {"python": python, "listen_s": DOCTOR_LISTEN_S}
    values = {"part": part, **values, "probe_py": body("doctor_probe.py")}
    # The check runs where a launch would: in the login environment.
    return script(keys, assign(**values), *bodies, body("doctor.sh"), login=part == "check")


def status_script(name: str, *, with_log: bool = False, log_lines: int = 30) -> Script:
    """Is the named server alive, is its socket there; optionally its log tail."""
    assignments = assign(name=name, with_log=int(with_log), log_lines=log_lines)
    return script(STATUS_KEYS, assignments, body("host_status.sh"), body("status.sh"))


def stop_script(name: str, *, term_s: float = 10.0, expect_id: str = "") -> Script:
    """Stop the named server (SIGTERM, then SIGKILL if it hangs, by its proven PID) and clean
    up.

    With `expect_id`, stop it only if it is that launch (and wait for its pid file).
    """
    assignments = assign(
        name=name,
        expect_id=expect_id,
        term_ticks=int(term_s / 0.2),
    )
    return script(STOP_KEYS, assignments, body("stop.sh"))


def list_script(name: str = "", *, kinds: Mapping[str, str], with_token: bool = False,
                with_kernels: bool = True) -> Script:
    """Describe every running server (or just `name`) of the backends in `kinds` (see
    `compose.kinds`); clean entries whose server is gone."""
    kinds_assignment, entry_shells = compose_kinds(kinds)
    assignments = assign(name=name, with_token=int(with_token), with_kernels=int(with_kernels))
    return script(LIST_KEYS, assignments + kinds_assignment, entry_shells, body("list.sh"))


def owner_script(name: str, client: str, session: str, token: str) -> Script:
    """Mark the server as attached to this labhop's `session` (to `client`), and let the
    browser token `token` open it, for as long as this script's stdin stays open."""
    values = assign(name=name, client=client, session=session, token=token,
                    token_name=browser_token_name(token) if token else "")
    return script(OWNER_KEYS, values, body("owner.sh"))


def browser_token_name(token: str) -> str:
    """The file name of a browser token on the host (as sh/server_config.py computes it)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def logs_script(name: str, *, lines: int = 100, follow: bool = False) -> Script:
    """The log's last `lines` after `labhop:log-begin`; with `follow`, raw, until EOF."""
    return script(LOGS_KEYS, assign(name=name, lines=lines, follow=int(follow)), body("logs.sh"))


def slurm_job_script(request: LaunchRequest) -> Script:
    """The batch script: activate, then exec Jupyter on the node's address."""
    values = launch_values(request)
    values["token"] = ""  # the job reads it from the 0600 state file, never from its script
    job = script(JOB_KEYS, assign(**values), body("activate.sh"), body("prepare.sh"),
                 body("job.sh"))
    return Script("#!/bin/sh\n" + job.text, JOB_KEYS)


def slurm_submit_script(request: LaunchRequest, sbatch_args: tuple[str, ...], *,
                        kinds: Mapping[str, str]) -> Script:
    """Submit the job from the login node, or report the job already serving this name
    (refusing the name while another backend's server holds it: `kinds`, see `compose.kinds`)."""
    kinds_assignment, entry_shells = compose_kinds(kinds)
    assignments = assign(
        name=request.name,
        server_id=request.server_id,
        token=request.token,
        record=json.dumps(request.record, sort_keys=True),
        slurm_opts=shlex.join(sbatch_args),
        job_script=slurm_job_script(request).text,
        # The home is shared: the login node checks the PATH to open (open_path.sh).
        root_dir=request.root_dir,
        local_home=request.local_home,
        open_path=request.open_path,
    )
    return script(SUBMIT_KEYS, assignments + kinds_assignment, entry_shells,
                  body("open_path.sh"), body("submit.sh"), login=True)


def slurm_status_script(name: str, *, with_log: bool = False,
                        log_lines: int = 30) -> Script:
    assignments = assign(name=name, with_log=int(with_log), log_lines=log_lines)
    return script(JOB_STATUS_KEYS, assignments, body("job_entry.sh"), body("job_status.sh"),
                  body("status.sh"))


def slurm_stop_script(name: str, *, expect_id: str = "") -> Script:
    """Cancel the named server's job, wait until it has left the queue, and clean up.

    With `expect_id`, only if it is that launch."""
    assignments = assign(name=name, expect_id=expect_id)
    return script(STOP_KEYS, assignments, body("job_entry.sh"), body("job_stop.sh"))

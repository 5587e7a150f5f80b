"""`ssh -O`: talking to a ControlMaster (check, forward, cancel, exit).

Small on purpose: the guard imports it, and a guard should start quickly.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from pathlib import Path

from labhop.errors import MasterBusyError
from labhop.ssh import proc

# labhop's own master ends this long after its last user is gone, if nothing else ended it
# (every labhop that used it was killed outright, watchdogs included).
MASTER_SAFETY_PERSIST_S = 30
# How long one `ssh -O` may take. A master that does not answer in time is busy (a flood of
# connections to a forwarded port, its open-file limit reached), not dead: it may recover,
# and a session must wait it out rather than give up on its servers.
CONTROL_TIMEOUT_S = 15


def control_argv(ssh: str, control_path: Path | str, command: str, host: str) -> list[str]:
    """`ssh -O COMMAND`: talks only to the master, so it reads no ssh config at all (a
    config deleted since, or one with LocalForward lines, must not change what it does)."""
    return [ssh, "-F", os.devnull, "-S", str(control_path), "-O", command, "--", host]


def master_alive(ssh: str, control_path: Path | str, host: str, *,
                 busy_is_alive: bool = True) -> bool:
    """Whether a master answers at `control_path`; one too busy to answer counts as alive
    (MasterBusyError is for those that must know which master it is), or with
    `busy_is_alive=False` raises MasterBusyError: a command about to use it would only hang."""
    if not os.path.exists(control_path):
        return False
    try:
        return master_pid(control_argv(ssh, control_path, "check", host)) != 0
    except MasterBusyError:
        if not busy_is_alive:
            raise
        return True


def master_pid(check_argv: list[str]) -> int:
    """The PID `ssh -O check` reports ("Master running (pid=N)"), 0 if none answers;
    MasterBusyError when the master does not answer within CONTROL_TIMEOUT_S."""
    try:
        result = proc.run(check_argv, timeout=CONTROL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise MasterBusyError(
            f"the connection did not answer `ssh -O check` within {CONTROL_TIMEOUT_S} s "
            "(busy: many connections at once?)") from None
    match = re.search(r"pid=(\d+)", result.stderr)
    return int(match.group(1)) if result.returncode == 0 and match else 0


def cancel_forward(*, ssh: str, control_path: str, spec: str, host: str) -> None:
    """Remove one forward of labhop's from a master (its own or the user's), and only it.

    One spec per call: `ssh -O cancel` with several stops at the first it cannot cancel.
    """
    if os.path.exists(control_path):
        cancel = control_argv(ssh, control_path, "cancel", host)
        # A master too busy to answer: its forwards end with it.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.run([*cancel[:-2], "-L", spec, *cancel[-2:]], timeout=CONTROL_TIMEOUT_S)

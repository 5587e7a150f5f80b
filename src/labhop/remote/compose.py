"""The sh text every script is made of: the files in `remote/sh`, the assignments of
its values, and the bootstrap command the remote login shell runs.

Pure: text in, text out. Every value that comes from the user is quoted once, here, with
`shlex.quote` and assigned to a shell variable at the top of the script; the script bodies
are constants, read from their files the first time a script needs them. What Python
decides for the scripts (the sentinel exit codes, Slurm's live job states) is assigned in
every script's header too, so no sh file spells a number or a state of its own.
"""

from __future__ import annotations

import functools
import re
import secrets
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from labhop.remote.protocol import HOST_PLACEHOLDER, RUN_MARKER, Exit, Keys
from labhop.remote.squeue import LIVE_STATES

# The command the remote login shell runs for every script. The script itself comes on
# stdin, so nothing secret or user-supplied is ever an ssh argument (arguments show up in
# `ps` for every user of both machines). It starts a *login* shell so PATH, modules and
# conda are set up as when the user logs in, then hands stdin to a POSIX sh, whatever
# the user's login shell is (csh-family shells do not take `-l -c`, so they get plain sh).
# The login shells that take `-l -c` (see `labhop doctor`, which says which way it went).
LOGIN_SHELLS = ("bash", "zsh", "ksh", "mksh", "dash", "sh", "fish")
REMOTE_LOGIN_BOOTSTRAP = (
    "/bin/sh -c 'case \"${SHELL##*/}\" in"
    f" {'|'.join(LOGIN_SHELLS)}) exec \"$SHELL\" -l -c \"exec /bin/sh -s\";;"
    " *) exec /bin/sh -s;; esac'"
)
REMOTE_PLAIN_BOOTSTRAP = "exec /bin/sh -s"


@dataclass(frozen=True)
class Script:
    """One remote script: its text (sent on ssh's stdin), the `Keys` of what it prints
    (see `protocol.parse_output`), and whether it runs in the login environment (PATH,
    modules, conda), which only steps that start or look for programs need."""

    text: str
    keys: Keys
    login: bool = False
    # Printed (as protocol.RUN_MARKER + marker) just before the script's own output: what
    # came before it is the login files' (protocol.after_marker).
    marker: str = ""

    @property
    def command(self) -> str:
        """The ssh command that runs it: a constant, never a value of the user's."""
        return REMOTE_LOGIN_BOOTSTRAP if self.login else REMOTE_PLAIN_BOOTSTRAP


# The files of remote/sh, read once each, the first time a script needs them (see
# tests/unit/test_shell_files, which checks that every file is used).
SHELL_FILE_NAMES = (
    "prelude.sh",  # shared shell functions and the `out` protocol, in every script
    "activate.sh",  # activates the --env environment (`activate`)
    # Decides the Jupyter flavour and whether a Unix socket can serve. `--sock` came with
    # jupyter_server 1.9 and classic notebook 6.1; anything older gets loopback TCP. Run
    # by prepare.sh with the environment's python (a value, `flavour_py`, not a body).
    "flavour.py",
    # Finds Jupyter and its flavour (`prepare_jupyter`); the one Jupyter command line of
    # both backends (`with_jupyter_command`, used by launch.sh and job.sh).
    "prepare.sh",
    "launch.sh",
    # Checks the PATH to open, and says where it is and whether it is a folder (`open_in`,
    # used by launch.sh and submit.sh before they create anything).
    "open_path.sh",
    # The status script's `main`, shared by a host's server and a Slurm job's: each adds
    # its own `status_fields`.
    "status.sh", "host_status.sh", "job_status.sh",
    "stop.sh", "list.sh", "owner.sh", "logs.sh",
    # The server's private jupyter_server_config.py (per-session browser tokens), written
    # by prepare.sh's `private_config` (a value, `server_config_py`, not a body).
    "server_config.py",
    # What a state entry of each backend is (`alive_KIND`, `where_KIND`, `describe_KIND`):
    # a backend names its own file in `Backend.entry_shell`; the scripts that read every
    # backend's entries (list, and a launch that must not take another backend's name)
    # get them all (see `kinds`).
    "host_entry.sh", "job_entry.sh",
    # Slurm: the batch job, its submission, its cancelling.
    "job.sh", "submit.sh", "job_stop.sh",
    "gpus.sh",  # the GPU query
    # `labhop doctor`'s steps, and the Python they run remotely: the Jupyter versions,
    # and a throwaway Unix-socket listener.
    "doctor.sh", "doctor_probe.py",
)


@functools.cache
def body(name: str) -> str:
    """The text of one file of remote/sh."""
    if name not in SHELL_FILE_NAMES:
        raise ValueError(f"not a file of remote/sh: {name!r}")
    # Beside this file, in the package (not importlib.resources: its import alone costs
    # more than reading every file).
    return (Path(__file__).parent / "sh" / name).read_text(encoding="utf-8")


def assign(**values: object) -> str:
    """`key='value'` lines, each value quoted once."""
    return "".join(f"{key}={shlex.quote(str(value))}\n" for key, value in values.items())


def _decided_in_python() -> str:
    """The values every script reads that Python owns: `fail`'s sentinel exit codes
    ($exit_env_not_found, ...), Slurm's live job states, and where a failure happened
    (`on $fail_host`: the laptop puts the host as typed in the placeholder's place)."""
    sentinels = {f"exit_{code.name.lower()}": int(code) for code in Exit}
    return assign(fail_host=HOST_PLACEHOLDER, **sentinels,
                  live_job_states=" ".join(sorted(LIVE_STATES)))


def script(keys: Keys, assignments: str, *bodies: str, login: bool = False) -> Script:
    """The prelude, the values, the bodies, then `main`: always a function, so sh reads
    the whole script before running any of it (a child that read stdin could otherwise
    eat the rest of the script)."""
    marker = secrets.token_hex(8)
    start = f"printf '%s\\n' {shlex.quote(RUN_MARKER + marker)}\nmain\n"
    text = "\n".join((body("prelude.sh"), _decided_in_python() + assignments, *bodies, start))
    return Script(text, keys, login, marker)


_KIND_NAME = re.compile(r"[a-z][a-z0-9_]*")


def kinds(entry_shells: Mapping[str, str]) -> tuple[str, str]:
    """(the `kinds` assignment, every backend's entry functions) for a script that reads
    the state entries of all backends, `entry_shells` mapping each kind to the name of its
    entry shell file."""
    for kind in entry_shells:
        if not _KIND_NAME.fullmatch(kind):
            raise ValueError(f"a backend kind must be a shell name, not {kind!r}")
    return (assign(kinds=" ".join(entry_shells)),
            "\n".join(body(name) for name in entry_shells.values()))

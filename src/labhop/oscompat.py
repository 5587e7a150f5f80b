"""What differs between the laptop's operating systems, in one place.

Every function takes the platform (`sys.platform` by default) and, where it matters, the
environment, so both sides are unit-tested on any machine. Windows' OpenSSH has no
ControlMaster (multiplexing needs fd passing over Unix sockets), its ssh cannot background
itself with `-f`, and Windows has no SIGHUP and no sessions in the POSIX sense.

"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

# sun_path: 108 bytes on Linux, 104 on macOS and the BSDs, the NUL included. OpenSSH binds a
# ControlPath under a temporary name 17 bytes longer (`PATH.` + 16 random characters).
_SUN_PATH = {"linux": 108}


_SUN_PATH_DEFAULT = 104


CONTROL_PATH_TEMP_SUFFIX = 17


def is_windows(system: str = sys.platform) -> bool:
    return system == "win32"


def supports_multiplexing(system: str = sys.platform) -> bool:
    """Whether this platform's OpenSSH can share one connection (ControlMaster)."""
    return not is_windows(system)


def raise_open_file_limit() -> None:
    """Raise this process's soft open-file limit to its hard limit, for the master ssh it
    starts (which inherits it): every connection to a forwarded port costs the master a
    descriptor, and at a desktop's usual 1024 a neighbour's flood of connections would
    leave it none for labhop's own steps. Where the OS allows no change, nothing."""
    try:
        import resource  # noqa: PLC0415 -- POSIX only
    except ImportError:  # Windows
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # macOS reports RLIM_INFINITY as the hard limit but refuses it above OPEN_MAX.
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 10240)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (OSError, ValueError):
        return


def stop_signals(system: str = sys.platform) -> list[signal.Signals]:
    """The signals that mean "stop and clean up": Ctrl+C, `kill`, a closed terminal.

    Windows has no SIGHUP or SIGTERM delivery from outside; a console's Ctrl+Break arrives
    as SIGBREAK.
    """
    if is_windows(system):
        return [signal.Signals(getattr(signal, name)) for name in ("SIGINT", "SIGBREAK")
                if hasattr(signal, name)]
    return [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


def detached_kwargs(system: str = sys.platform) -> dict[str, object]:
    """Popen arguments that keep a child out of the terminal's Ctrl+C.

    On POSIX a new session (setsid); on Windows a new process group, which is what keeps a
    console's Ctrl+C from reaching it.
    """
    if is_windows(system):
        return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)}
    return {"start_new_session": True}


def max_socket_path(system: str = sys.platform) -> int:
    """The longest Unix socket path (bytes, without the NUL) this platform can bind."""
    return _SUN_PATH.get("linux" if system.startswith("linux") else system,
                         _SUN_PATH_DEFAULT) - 1


def control_path_fits(path: str, system: str = sys.platform) -> bool:
    """Whether ssh can bind a ControlPath here, counting its temporary name."""
    return len(os.fsencode(path)) + CONTROL_PATH_TEMP_SUFFIX <= max_socket_path(system)


def runtime_base(system: str = sys.platform,
                 env: Mapping[str, str] | None = None) -> Path | None:
    """A private per-user directory for sockets that lives as long as the login session:
    `$XDG_RUNTIME_DIR` where the desktop provides one (Linux), else None (the caller then
    uses the user's cache directory)."""
    env = os.environ if env is None else env
    if is_windows(system):
        return None
    value = env.get("XDG_RUNTIME_DIR", "")
    return Path(value) if value and os.path.isabs(value) else None


def has_display(system: str = sys.platform, env: Mapping[str, str] | None = None) -> bool:
    """Whether a browser could show a window: always on macOS and Windows; on other
    systems only inside a graphical session."""
    env = os.environ if env is None else env
    if system in ("darwin", "win32"):
        return True
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))

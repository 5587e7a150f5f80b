"""Jupyter's launch values: what a script that starts Jupyter assigns (see sh/prepare.sh).

Pure: the request in, shell variables out.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from labhop.model import APP_TABLE, DEFAULT_APP, EnvSpec
from labhop.remote.compose import body

# Linux sun_path holds 108 bytes with the NUL, macOS 104; stay below both.
MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class LaunchRequest:
    """Everything the remote needs to start (or find) one named server."""

    name: str
    server_id: str
    token: str
    app: str = DEFAULT_APP
    env: EnvSpec | None = None
    root_dir: str = ""
    local_home: str = ""
    transport: str = "unix"
    idle_timeout: int = 0
    jupyter_args: tuple[str, ...] = ()
    record: dict[str, object] = field(default_factory=dict)
    # For the kernels (see gpus.choose); "" leaves the remote's own value alone.
    cuda_visible_devices: str = ""
    # The PATH to open in the browser, as labhop.opening normalized it; "" for none.
    # Checked before anything starts (open_path.sh); only the launch reads it.
    open_path: str = ""
    # How long a TCP server may take to listen on the port it chose (see await_own_port).
    port_wait: int = 60


def _env_label(env: EnvSpec | None) -> str:
    return f" in {env}" if env else " on the login PATH"


def cull_interval(idle_timeout: int) -> int:
    """How often Jupyter checks for idle kernels: often enough to honour short timeouts."""
    return max(5, min(300, idle_timeout // 4))


def websocket_ping(idle_timeout: int) -> tuple[int, int]:
    """(interval, timeout) in seconds of Jupyter's websocket pings, by which it closes a
    browser tab's websocket whose tunnel died without a FIN (the laptop changed network,
    slept, lost power): sshd still holds the socket's other end, so only a ping that gets
    no pong tells. Until then the kernel counts as connected, and Jupyter never culls a
    connected kernel (cull_connected=False) nor ends a server that has kernels.

    Jupyter's own pings (30 s, closing after 90 s without a pong, then 5 s for the close
    handshake) find a dead socket within about 2 minutes: fine beside the default 6 h,
    too slow for `--idle-timeout 60`. So the interval is a tenth of the idle timeout,
    between 5 s and Jupyter's 30 s, and the timeout three intervals as Jupyter's: a dead
    socket is gone after at most 4 intervals + 5 s, under half the idle timeout from 50 s
    up (a 30 s idle timeout still waits up to 25 s). Three missed pongs in a row are
    needed, so a slow network or a busy laptop does not drop a live tab, and a dropped
    one only reconnects (JupyterLab does so by itself; the kernel is untouched).
    """
    interval = max(5, min(30, idle_timeout // 10)) if idle_timeout > 0 else 30
    return interval, 3 * interval


def launch_values(request: LaunchRequest) -> dict[str, object]:
    """The shell variables a script that starts Jupyter needs (see sh/prepare.sh)."""
    env = request.env
    return dict(
        name=request.name,
        server_id=request.server_id,
        token=request.token,
        app=request.app,
        pip_name=APP_TABLE[request.app].package,
        env_kind=env.kind if env else "",
        env_value=env.value if env else "",
        env_label=_env_label(env),
        root_dir=request.root_dir,
        local_home=request.local_home,
        transport=request.transport,
        max_sock=MAX_SOCKET_PATH,
        idle_timeout=request.idle_timeout,
        cull_interval=cull_interval(request.idle_timeout),
        ping_interval=websocket_ping(request.idle_timeout)[0],
        ping_timeout=websocket_ping(request.idle_timeout)[1],
        jupyter_args=shlex.join(request.jupyter_args),
        record=json.dumps(request.record, sort_keys=True),
        flavour_py=body("flavour.py"),
        server_config_py=body("server_config.py"),
        port_wait=request.port_wait,
        cuda_visible_devices=request.cuda_visible_devices,
    )

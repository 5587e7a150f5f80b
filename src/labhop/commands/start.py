"""`labhop [start] HOST` and `labhop attach HOST [NAME]`: the checked options made into
the session's request, and the session run (see `session.supervisor`)."""

from __future__ import annotations

from labhop import opening
from labhop.config.options import Options
from labhop.session import sessions, supervisor
from labhop.ssh.target import Target
from labhop.ui import UI


def start(resolved: Options, target: Target, ui: UI, *, path: str | None, as_json: bool,
          jupyter_args: tuple[str, ...] = (), detach: bool = False) -> int:
    """Launch a server (or attach to the one of that name) and supervise it until Ctrl+C;
    the exit status."""
    request = supervisor.StartRequest(
        target=target,
        app=resolved.app,
        env=resolved.env,
        root_dir=resolved.dir,
        name=resolved.name,
        port=resolved.port,
        forwards=resolved.forward,
        open_browser=not (resolved.no_browser or as_json or detach),
        keep=resolved.keep or detach,
        detach=detach,
        idle_timeout=resolved.idle_timeout,
        start_timeout=float(resolved.timeout),
        jupyter_args=jupyter_args,
        slurm=resolved.slurm,
        queue_timeout=float(resolved.queue_timeout),
        gpus=resolved.gpus,
        open_path=opening.normalize(path) if path is not None else "",
    )
    return sessions.start(request, ui)


def attach(resolved: Options, target: Target, ui: UI, *, as_json: bool) -> int:
    """Tunnel to a running server until Ctrl+C; it keeps running after. The exit status."""
    request = supervisor.StartRequest(
        target=target,
        name=resolved.name,
        port=resolved.port,
        forwards=resolved.forward,
        open_browser=not (resolved.no_browser or as_json),
        start_timeout=float(resolved.timeout),
    )
    return sessions.attach(request, ui)

"""`labhop [start] HOST` and `labhop attach HOST [NAME]`: the checked options made into
the session's request, and the session run (see `session.supervisor`)."""

from __future__ import annotations

from labhop import opening
from labhop.config.options import Options
from labhop.errors import CommandLineError
from labhop.session import sessions, supervisor
from labhop.ssh.target import Target
from labhop.ui import UI


def start(resolved: Options, target: Target, ui: UI, *, path: str | None, as_json: bool,
          jupyter_args: tuple[str, ...] = (), detach: bool = False,
          no_wait: bool = False) -> int:
    """Launch a server (or attach to the one of that name) and supervise it until Ctrl+C;
    the exit status."""
    if no_wait:
        check_no_wait(detach=detach, slurm=resolved.slurm is not None)
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
        no_wait=no_wait,
        idle_timeout=resolved.idle_timeout,
        start_timeout=float(resolved.timeout),
        jupyter_args=jupyter_args,
        slurm=resolved.slurm,
        queue_timeout=float(resolved.queue_timeout),
        walltime_warnings=resolved.walltime_warnings,
        gpus=resolved.gpus,
        open_path=opening.normalize(path) if path is not None else "",
    )
    return sessions.start(request, ui)


def check_no_wait(*, detach: bool, slurm: bool) -> None:
    """--no-wait skips only the wait for a queued job to run: it needs a job (--slurm, or
    the config's `slurm`) and a labhop that goes away without it (--detach)."""
    if not detach:
        raise CommandLineError("--no-wait needs --detach: without it labhop waits for the "
                               "server anyway, to tunnel to it")
    if not slurm:
        raise CommandLineError("--no-wait needs --slurm (or `slurm` in the config file): "
                               "only a batch job waits in a queue")


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

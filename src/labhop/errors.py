"""The exception tree and the exit codes it maps to.

Library code raises a `LabhopError` subclass; `cli.main` catches it once, prints its
one-line message and exits with its status. Nothing below the CLI calls `sys.exit`.

"""

from __future__ import annotations

from enum import IntEnum, unique


@unique
class ExitStatus(IntEnum):
    """Documented exit codes (README, `labhop --help`)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    CONFIG = 3
    SSH_MISSING = 9
    HOST_UNKNOWN = 10
    CONNECT_FAILED = 11
    AUTH_REFUSED = 12
    HOST_KEY = 13
    SSH_FAILED = 14
    ENV_NOT_FOUND = 20
    JUPYTER_NOT_FOUND = 21
    ROOT_DIR_MISSING = 22
    SERVER_EXITED = 23
    START_TIMEOUT = 24
    LOCAL_PORT = 25
    REMOTE_FAILED = 26
    NOT_FOUND = 27
    NO_GPUS = 28
    SERVER_ENDED = 29
    SLURM_REFUSED = 30
    SLURM_PENDING = 31
    WALLTIME_REACHED = 32
    INTERNAL = 70  # a bug in labhop (sysexits' EX_SOFTWARE): the front door's catch-all
    INTERRUPTED = 130


def with_log(message: str, log: str) -> dict[str, str]:
    """An error's message and details when the server's log tail goes with it: the tail
    under its header, or, when the log holds nothing, a message that says so (never a
    header above nothing)."""
    if log.strip():
        return {"message": f"{message}; the last lines of its log:", "details": log}
    return {"message": f"{message} (its log is empty)", "details": ""}


class LabhopError(Exception):
    """A failure the user can act on: `str(err)` is the one line we print."""

    status: ExitStatus = ExitStatus.ERROR

    def __init__(self, message: str, *, details: str = "") -> None:
        super().__init__(message)
        # Extra lines (a remote log tail) printed under the message, never a traceback.
        self.details = details


class CommandLineError(LabhopError):
    """A bad value typed on the command line (the same value in the config file is a
    ConfigError): the line names the option and what it takes."""

    status = ExitStatus.USAGE


class ConfigError(LabhopError):
    status = ExitStatus.CONFIG


class SSHError(LabhopError):
    status = ExitStatus.SSH_FAILED


class MasterBusyError(SSHError):
    """The shared connection does not answer its control commands in time: busy, not gone.
    A session reports it and waits; it never stops a server for it."""


class SSHMissingError(SSHError):
    status = ExitStatus.SSH_MISSING


class HostUnknownError(SSHError):
    status = ExitStatus.HOST_UNKNOWN


class ConnectError(SSHError):
    status = ExitStatus.CONNECT_FAILED


class AuthError(SSHError):
    status = ExitStatus.AUTH_REFUSED


class HostKeyError(SSHError):
    status = ExitStatus.HOST_KEY


class RemoteError(LabhopError):
    status = ExitStatus.REMOTE_FAILED


class EnvNotFoundError(RemoteError):
    status = ExitStatus.ENV_NOT_FOUND


class JupyterNotFoundError(RemoteError):
    status = ExitStatus.JUPYTER_NOT_FOUND


class RootDirMissingError(RemoteError):
    status = ExitStatus.ROOT_DIR_MISSING


class SocketForwardingRefusedError(RemoteError):
    """The host's sshd will not forward to a Unix socket, and the server listens on one."""


class ServerExitedError(RemoteError):
    status = ExitStatus.SERVER_EXITED


class ServerEndedError(RemoteError):
    """The server ended by itself while a labhop was attached: its --idle-timeout, a crash,
    a job's walltime. (A stop someone asked for, `labhop stop`, is no error.)"""

    status = ExitStatus.SERVER_ENDED


class WalltimeReachedError(ServerEndedError):
    """A Slurm job reached its time limit (-t) while a labhop was attached."""

    status = ExitStatus.WALLTIME_REACHED


class StartTimeoutError(RemoteError):
    status = ExitStatus.START_TIMEOUT


class LocalPortError(LabhopError):
    status = ExitStatus.LOCAL_PORT

    def __init__(self, message: str, *, details: str = "", port: int | None = None) -> None:
        super().__init__(message, details=details)
        # The local port that could not be had, where one is known (a tunnel then retries
        # that forward on another port).
        self.port = port


class ServerNotFoundError(LabhopError):
    status = ExitStatus.NOT_FOUND


class NoGpusError(LabhopError):
    """No nvidia-smi, no GPU, or `--gpus` names a GPU the host does not have."""

    status = ExitStatus.NO_GPUS


class SlurmError(RemoteError):
    """sbatch refused the job (bad partition, account, limits...)."""

    status = ExitStatus.SLURM_REFUSED


class SlurmPendingError(RemoteError):
    """The job was still waiting in the queue at the deadline (and was cancelled)."""

    status = ExitStatus.SLURM_PENDING

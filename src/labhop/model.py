"""The values every layer speaks of: the Jupyter apps, environments, forwards and names.

A leaf: it imports nothing of labhop's but `errors`. Each of these decisions has its one
home here (the app table drives `--app`, the app labels, the pip names and the URL paths).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from labhop.errors import ConfigError


@dataclass(frozen=True)
class App:
    """One Jupyter app `--app` can name."""

    name: str  # as --app spells it
    label: str  # for people: "JupyterLab is ready on gamer"
    package: str  # the pip distribution it comes in (doctor's check, the install hint)
    path: str  # its start page, the URL path a browser opens


APP_TABLE: dict[str, App] = {app.name: app for app in (
    App("lab", "JupyterLab", "jupyterlab", "/lab"),
    App("notebook", "Jupyter Notebook", "notebook", "/tree"),
    App("server", "Jupyter Server", "jupyter_server", "/"),
)}
APPS = tuple(APP_TABLE)
DEFAULT_APP = "lab"



ENV_KINDS = ("conda", "mamba", "micromamba", "venv", "module", "cmd")


@dataclass(frozen=True)
class EnvSpec:
    """An environment to activate before Jupyter starts, as `KIND:VALUE`."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


def parse_env_spec(text: str) -> EnvSpec:
    kind, sep, value = text.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in ENV_KINDS or not value.strip():
        raise ConfigError(
            f"bad --env {text!r}: use conda:NAME, mamba:NAME, micromamba:NAME, venv:PATH, "
            "module:NAME[,NAME], or cmd:'SHELL TEXT'"
        )
    return EnvSpec(kind, value.strip() if kind != "cmd" else value)


FORWARD_ALLOWED = "use REMOTE_PORT or REMOTE_PORT:LOCAL_PORT, each a port number 1-65535"


NAME_ALLOWED = "use letters, digits, '-', '_' and '.' only, not starting with '.'"


def is_valid_name(name: str) -> bool:
    """A server name: it names a directory on the remote, so letters, digits, '-', '_', '.'
    only, and no hidden ('.x') or special ('..') names."""
    return bool(name) and not name.startswith(".") and all(
        char.isalnum() or char in "-_." for char in name)


@dataclass(frozen=True)
class Forward:
    """One --forward: REMOTE_PORT where the server runs (its host, or its job's node),
    reached here on 127.0.0.1:LOCAL_PORT (None: REMOTE_PORT if free, else any free one)."""

    remote_port: int
    local_port: int | None = None

    def __str__(self) -> str:
        """As typed: '6006' or '6006:16006'."""
        if self.local_port is None:
            return str(self.remote_port)
        return f"{self.remote_port}:{self.local_port}"


def parse_forward(value: object) -> Forward:
    """'6006', 6006 or '6006:16006' -> Forward; ValueError for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        ports = [value]
    elif isinstance(value, str) and re.fullmatch(r" *[0-9]{1,5}(:[0-9]{1,5})? *", value):
        ports = [int(part) for part in value.strip().split(":")]
    else:
        raise ValueError(f"{value!r} is not REMOTE_PORT[:LOCAL_PORT]")
    if not all(1 <= port <= 65535 for port in ports):
        raise ValueError(f"{value!r}: a port number is 1-65535")
    return Forward(ports[0], ports[1] if len(ports) > 1 else None)

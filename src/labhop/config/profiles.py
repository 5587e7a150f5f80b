"""The config file: per-host defaults, so `labhop gamer` alone does the usual thing.

    # ~/.config/labhop/config.toml   (or $LABHOP_CONFIG_DIR/config.toml)
    [defaults]
    idle_timeout = "4h"

    [hosts.gamer]
    env = "conda:pytorch"
    dir = "~/proj"
    gpus = "auto"

Precedence: a command-line option > [hosts.HOST] > [defaults] > labhop's built-in default
(`labhop.options` applies it and checks every value). Here: the file's shape and types.

"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from labhop.errors import ConfigError

# Keys a profile may set, with their TOML type.
KEYS: dict[str, type] = {
    "env": str,
    "app": str,
    "dir": str,
    "name": str,
    "port": int,
    "forward": list,  # of "REMOTE_PORT[:LOCAL_PORT]" strings or REMOTE_PORT ints
    "no_browser": bool,
    "keep": bool,
    "idle_timeout": str,
    "timeout": str,
    "gpus": str,
    "slurm": str,
    "queue_timeout": str,
    "walltime_warnings": str,
    "multiplex": bool,
    "persist": str,
}


# Each TOML type as the file's author thinks of it.
_KINDS: dict[type, str] = {
    str: "text (in quotes)",
    int: "a whole number",
    bool: "true or false",
    list: 'a list, like [6006, "8787:18787"]',
}


def _toml(value: object) -> str:
    """A value as it is written in the file: "x" in quotes, true, 4, [6006]."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "a table"
    return str(value)


def config_dir() -> Path:
    override = os.environ.get("LABHOP_CONFIG_DIR")
    if override:
        return Path(override)
    import platformdirs  # noqa: PLC0415 -- only when there is no override to use

    return Path(platformdirs.user_config_dir("labhop"))


def config_path() -> Path:
    return config_dir() / "config.toml"


@dataclass(frozen=True)
class Profiles:
    path: Path
    defaults: dict[str, object] = field(default_factory=dict)
    hosts: dict[str, dict[str, object]] = field(default_factory=dict)

    def locate(self, host: str, key: str) -> tuple[object, str] | None:
        """(value, the table that sets it: "hosts.HOST" or "defaults") for `key` on `host`,
        or None if no table sets it."""
        if key in self.hosts.get(host, {}):
            return self.hosts[host][key], f"hosts.{host}"
        if key in self.defaults:
            return self.defaults[key], "defaults"
        return None


def load(path: Path | None = None) -> Profiles:
    """Read and check the config file; a missing file is an empty config."""
    path = path or config_path()
    if sys.version_info >= (3, 11):
        import tomllib  # noqa: PLC0415 -- only a command that reads its config pays
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib  # noqa: PLC0415
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Profiles(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return parse(data, path)


def parse(data: dict[str, object], path: Path) -> Profiles:
    unknown = set(data) - {"defaults", "hosts"}
    if unknown:
        raise ConfigError(f"{path}: unknown section {sorted(unknown)[0]!r}; "
                          "use [defaults] and [hosts.NAME]")
    defaults = _table(data.get("defaults", {}), "defaults", path)
    hosts_raw = data.get("hosts", {})
    if not isinstance(hosts_raw, dict):
        raise ConfigError(f"{path}: 'hosts' must be a table of [hosts.NAME] sections")
    hosts = {name: _table(table, f"hosts.{name}", path) for name, table in hosts_raw.items()}
    return Profiles(path, defaults, hosts)


def _table(raw: object, where: str, path: Path) -> dict[str, object]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [{where}] must be a table")
    for key, value in raw.items():
        expected = KEYS.get(key)
        if expected is None:
            raise ConfigError(f"{path}: unknown key {key!r} in [{where}]; known keys: "
                              f"{', '.join(sorted(KEYS))}")
        # bool is an int in Python; a port of `true` is still a mistake.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"{path}: {key} in [{where}] must be {_KINDS[expected]}, "
                              f"not {_toml(value)}")
    return dict(raw)

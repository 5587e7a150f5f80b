"""The HOST names a user may mean: the ssh config's `Host` entries (with `Include`) and
config.toml's `[hosts.NAME]` tables, for completion. Reads files only; never connects.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
from collections.abc import Callable, Iterable
from pathlib import Path

from labhop import debuglog, model
from labhop.config import profiles

_LOGGER = debuglog.get(__name__)


# ssh's own limit on nested Include (READCONF_MAX_DEPTH in readconf.c).
MAX_INCLUDE_DEPTH = 16


# Characters of ssh_config patterns (PATTERNS in ssh_config(5)): such a Host line names no
# host one could type. A leading `!` negates.
_PATTERN_CHARS = frozenset("*?!")


# readconf.c: the keyword ends at a blank or `=`; one `=` with blanks around it may follow.
_LINE = re.compile(r"\s*([^\s=]+)\s*(?:=\s*)?(.*)")


def _words(line: str) -> list[str]:
    """The keyword and arguments of one ssh_config line (`Keyword arg...`, `Keyword=arg`,
    `Keyword = arg`; arguments may be quoted); [] for blank lines, comments and lines ssh
    would refuse (an unclosed quote)."""
    match = _LINE.match(line)
    if match is None or match.group(1).startswith("#"):
        return []
    try:
        args = shlex.split(match.group(2), comments=True)
    except ValueError:
        return []
    return [match.group(1), *args]


def ssh_config_hosts(path: str, *, read_text: Callable[[str], str],
                     expand: Callable[[str], Iterable[str]], ssh_dir: str,
                     home: str) -> list[str]:
    """The host names `path`'s `Host` lines name, in order and without repeats, following
    `Include` as ssh does: `~` is `home`, a relative path is relative to `ssh_dir` (the
    user's ~/.ssh), globs are expanded by `expand` in lexical order, at most
    MAX_INCLUDE_DEPTH deep. Patterns (`*`, `?`, `!negated`) are skipped.

    `read_text` raises OSError (or UnicodeDecodeError) for a file it cannot read: that
    file, included or not, adds nothing, as a missing Include file adds nothing to ssh.
    """
    hosts: dict[str, None] = {}
    _collect(path, hosts, read_text=read_text, expand=expand, ssh_dir=ssh_dir, home=home,
             depth=0)
    return list(hosts)


def _collect(path: str, hosts: dict[str, None], *, read_text: Callable[[str], str],
             expand: Callable[[str], Iterable[str]], ssh_dir: str, home: str,
             depth: int) -> None:
    if depth > MAX_INCLUDE_DEPTH:
        return
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError, ValueError):
        return
    for line in text.splitlines():
        words = _words(line)
        if len(words) < 2:
            continue
        keyword = words[0].lower()
        if keyword == "host":
            for name in words[1:]:
                if not _PATTERN_CHARS & set(name):
                    hosts.setdefault(name, None)
        elif keyword == "include":
            for pattern in words[1:]:
                full = _include_path(pattern, ssh_dir=ssh_dir, home=home)
                for included in sorted(expand(full)):
                    _collect(included, hosts, read_text=read_text, expand=expand,
                             ssh_dir=ssh_dir, home=home, depth=depth + 1)


def _include_path(pattern: str, *, ssh_dir: str, home: str) -> str:
    if pattern == "~" or pattern.startswith("~/"):
        return home + pattern[1:]
    if os.path.isabs(pattern):
        return pattern
    return os.path.join(ssh_dir, pattern)


def _read_text(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def _expand(pattern: str) -> list[str]:
    return glob.glob(pattern)


def ssh_hosts(config_file: str | None = None) -> list[str]:
    """The hosts of the user's ssh config (`-F FILE` if given, else ~/.ssh/config)."""
    home = os.path.expanduser("~")
    ssh_dir = os.path.join(home, ".ssh")
    # ssh reads -F FILE relative to its working directory, with `~` as the home.
    path = os.path.expanduser(config_file) if config_file else os.path.join(ssh_dir, "config")
    return ssh_config_hosts(path, read_text=_read_text, expand=_expand, ssh_dir=ssh_dir,
                            home=home)


def config_hosts() -> list[str]:
    """The `[hosts.NAME]` tables of labhop's config.toml; none if it is missing or broken
    (the command itself reports a broken file, with the line that says how to fix it)."""
    try:
        return list(profiles.load().hosts)
    except Exception:  # completion must never fail; the command will say what is wrong
        _LOGGER.debug("config.toml unreadable during completion", exc_info=True)
        return []


def host_candidates(incomplete: str, config_file: str | None = None) -> list[str]:
    """HOST candidates starting with `incomplete`: ssh config hosts, then config.toml's."""
    try:
        names = dict.fromkeys([*ssh_hosts(config_file), *config_hosts()])
    except Exception:  # completion must never fail (a bad path, an odd file system)
        _LOGGER.debug("ssh config unreadable during completion", exc_info=True)
        return []
    return [name for name in names if name.startswith(incomplete)]


def env_candidates(incomplete: str) -> list[str]:
    """`--env` completes its kinds (`conda:`, `venv:`, ...): the names after the colon live
    on the remote, and completion connects nowhere."""
    return [f"{kind}:" for kind in model.ENV_KINDS if f"{kind}:".startswith(incomplete)]

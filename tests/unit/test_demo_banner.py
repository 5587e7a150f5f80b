"""The demo's banner (tests/testbed.py): every other alias of the stand-in host and every
environment of its user, each as a command ready to paste, saying what it shows and, for a
failure, labhop's documented exit status for it. tests/test_demo_e2e.py runs them."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from labhop.errors import ExitStatus
from tests.testbed import ALIAS_VARIANTS, demo_banner_tries, demo_commands

CONFIG = Path("/home/me/.cache/labhop-demo/ssh_config")
LABHOP = str(Path(sys.executable).parent / "labhop")
# What each try ends with: its host or --env, and the status (None: it works).
EXPECTED: dict[str, ExitStatus | None] = {
    "gpubox-wrongkey": ExitStatus.AUTH_REFUSED,
    "gpubox-badhostkey": ExitStatus.HOST_KEY,
    "gpubox-down": ExitStatus.CONNECT_FAILED,
    "gpubox-jumped": None,
    "venv:~/jvenv": None,
    "conda:jl": None,
    "conda:bare": ExitStatus.JUPYTER_NOT_FOUND,
    "venv:~/emptyvenv": ExitStatus.JUPYTER_NOT_FOUND,
    "conda:nosuch": ExitStatus.ENV_NOT_FOUND,
}


@pytest.fixture(autouse=True)
def _not_through_sudo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUDO_USER", raising=False)


def tries() -> dict[str, tuple[str, list[str]]]:
    """Each try but the basic four, by its host or --env: what it shows, and its argv."""
    found = {}
    for _, section in demo_commands(CONFIG, "gpubox")[1:]:
        for what, command in section:
            argv = shlex.split(command)
            key = argv[argv.index("--env") + 1] if "--env" in argv else argv[-1]
            found[key] = (what, argv)
    return found


def test_every_alias_and_environment_is_offered_with_what_it_shows() -> None:
    offered = tries()
    assert set(offered) == set(EXPECTED)
    assert {f"gpubox-{variant}" for variant in ALIAS_VARIANTS if variant} <= set(offered)
    for key, status in EXPECTED.items():
        what, _ = offered[key]
        said = re.search(r": exit (\d+) \(", what)
        assert (int(said[1]) if said else None) == status, what


def test_each_command_pastes_from_any_directory_with_f_after_the_command() -> None:
    [(_, basics), *_] = demo_commands(CONFIG, "gpubox")
    assert [shlex.split(command) for _, command in basics] == [
        [LABHOP, name, "-F", str(CONFIG), "gpubox"] for name in ("ls", "logs", "gpus", "stop")]
    for _, argv in tries().values():
        assert argv[0] == LABHOP
        # `labhop -F CONFIG HOST ...` or `labhop COMMAND -F CONFIG ...`
        assert argv[1:3] == ["-F", str(CONFIG)] or argv[2:4] == ["-F", str(CONFIG)]
    assert tries()["gpubox-jumped"][1][1:] == [
        "ls", "-F", str(CONFIG), "-J", "gpubox", "gpubox-jumped"]


def test_the_banner_puts_each_command_alone_on_its_line_under_what_it_shows() -> None:
    lines = demo_banner_tries(CONFIG, "gpubox").splitlines()
    commands = [index for index, line in enumerate(lines) if line.startswith(f"    {LABHOP} ")]
    assert len(commands) == 4 + len(EXPECTED)
    described = [lines[index - 1] for index in commands[4:]]
    assert all(re.match(r"  \S", line) for line in described), described

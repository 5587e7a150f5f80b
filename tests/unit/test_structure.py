"""Structural checks: the README and `--help` must not drift from the code (every option of
every command is documented, every exit status exists), and processes start in one place."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from labhop.cli import EXIT_CODES_HELP, cli
from labhop.errors import ExitStatus

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
COMMANDS = sorted(cli.commands.items())


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_option_is_in_the_readme(name: str, command: click.Command) -> None:
    missing = [
        option
        for param in command.params if isinstance(param, click.Option)
        for option in param.opts
        if option.startswith("--") and option not in ("--help",) and f"`{option}" not in README
        and f"{option} " not in README and f"{option}]" not in README
    ]
    assert missing == [], f"labhop {name}: options not in the README: {missing}"


def test_every_command_is_in_the_readme() -> None:
    for name, _ in COMMANDS:
        if name != "start":
            assert f"labhop {name} " in README, name


def test_documented_exit_codes_exist_and_every_code_is_documented() -> None:
    codes = {status.value for status in ExitStatus}
    readme_codes = {int(code) for code in re.findall(r"^\| (\d+) \|", README, re.MULTILINE)}
    help_codes = {int(code) for code in re.findall(r"(?:^|\s)(\d{1,3})  \S", EXIT_CODES_HELP)}
    assert readme_codes == codes
    assert help_codes == codes


def test_only_proc_starts_processes() -> None:
    """One choke point for spawning (argv lists, logging, own sessions): labhop.proc."""
    source = Path(__file__).resolve().parents[2] / "src" / "labhop"
    offenders = [
        f"{path.name}:{number}"
        for path in sorted(source.glob("*.py")) if path.name != "proc.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"subprocess\.(run|Popen|call|check_call|check_output)\(|os\.(system|popen)\(",
                     line)
    ]
    assert offenders == []

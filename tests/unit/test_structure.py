"""Structural checks: the README and `--help` must not drift from the code (every option of
every command is documented, every exit status exists), processes start in one place, and
the layers of src/labhop import only downwards (the README's code map)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest

from labhop.cli import main as front_door
from labhop.cli.app import EXIT_CODES_HELP, cli, group_help, load_command
from labhop.cli.registry import COMMANDS
from labhop.errors import ExitStatus

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SOURCE = ROOT / "src" / "labhop"
COMMAND_OBJECTS = [(name, load_command(name)) for name in COMMANDS]

# Each layer and the layers it may import (besides itself). Leaves are the modules at the
# top of the package; they import only each other.
LEAVES = "leaves"
ALLOWED: dict[str, set[str]] = {
    LEAVES: set(),
    "remote": {LEAVES},
    "ssh": {LEAVES},
    "config": {LEAVES},
    "backends": {"remote", "ssh", LEAVES},
    "session": {"backends", "remote", "ssh", LEAVES},
    "commands": {"session", "backends", "remote", "ssh", "config", LEAVES},
    "cli": {"commands", "session", "backends", "remote", "ssh", "config", LEAVES},
}


def layer_of(module: str) -> str:
    """'labhop.ssh.proc' -> 'ssh'; 'labhop.gpus' and 'labhop' -> leaves; `python -m
    labhop` is the front door's."""
    if module == "labhop.__main__":
        return "cli"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ALLOWED:
        return parts[1]
    return LEAVES


def module_name(path: Path) -> str:
    relative = path.relative_to(SOURCE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def python_files() -> list[Path]:
    return sorted(path for path in SOURCE.rglob("*.py") if "sh" not in path.parts)


def labhop_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of labhop's, anywhere in the file (lazy ones too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names
                      if alias.name.startswith("labhop")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "labhop"):
            # `from labhop.remote import protocol` imports labhop.remote.protocol.
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


@pytest.mark.parametrize(("name", "command"), COMMAND_OBJECTS,
                         ids=[name for name, _ in COMMAND_OBJECTS])
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
    assert COMMAND_OBJECTS
    for name, _ in COMMAND_OBJECTS:
        if name != "start":
            assert f"labhop {name} " in README, name


def test_documented_exit_codes_exist_and_every_code_is_documented() -> None:
    codes = {status.value for status in ExitStatus}
    readme_codes = {int(code) for code in re.findall(r"^\| (\d+) \|", README, re.MULTILINE)}
    help_codes = {int(code) for code in re.findall(r"(?:^|\s)(\d{1,3})  \S", EXIT_CODES_HELP)}
    assert readme_codes == codes
    assert help_codes == codes


def test_the_fast_help_is_clicks_word_for_word() -> None:
    """`labhop --help` prints help.txt without loading click; it must say what click says
    (regenerate it with: python -c 'from labhop.cli.app import group_help; print(group_help(),
    end="")' > src/labhop/cli/help.txt)."""
    assert Path(front_door.HELP_FILE).read_text() == group_help()
    assert set(cli.list_commands(click.Context(cli))) == set(COMMANDS)


def test_only_proc_starts_processes() -> None:
    """One choke point for spawning (argv lists, logging, own sessions): labhop.ssh.proc."""
    offenders = [
        f"{path.relative_to(SOURCE)}:{number}"
        for path in python_files() if path != SOURCE / "ssh" / "proc.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"subprocess\.(run|Popen|call|check_call|check_output)\(|os\.(system|popen)\(",
                     line)
    ]
    assert offenders == []


def test_the_layers_are_packages() -> None:
    for layer in ALLOWED:
        if layer != LEAVES:
            assert (SOURCE / layer / "__init__.py").is_file(), layer


def test_no_import_points_up_a_layer() -> None:
    """A module imports only from its own layer or the ones below it (README, Code map)."""
    offenders = []
    for path in python_files():
        here = layer_of(module_name(path))
        for line, module in labhop_imports(path):
            there = layer_of(module)
            if there != here and there not in ALLOWED[here]:
                offenders.append(f"{path.relative_to(SOURCE)}:{line} ({here}) imports "
                                 f"{module} ({there})")
    assert offenders == []


def test_the_ssh_layer_imports_neither_remote_nor_session() -> None:
    for path in (SOURCE / "ssh").glob("*.py"):
        for line, module in labhop_imports(path):
            assert layer_of(module) not in ("remote", "session"), f"{path.name}:{line}"


def test_only_the_cli_layer_imports_click() -> None:
    offenders = []
    for path in python_files():
        if layer_of(module_name(path)) == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(SOURCE)}:{node.lineno}" for name in names
                          if name.split(".")[0] == "click"]
    assert offenders == []


def test_no_module_is_over_450_lines() -> None:
    long = {str(path.relative_to(SOURCE)): count for path in python_files()
            if (count := len(path.read_text().splitlines())) > 450}
    assert long == {}


def test_no_not_implemented_stand_ins() -> None:
    """Closed interfaces are abc.ABCs: a missing method fails at construction, not at the
    moment a user reaches it."""
    offenders = [f"{path.relative_to(SOURCE)}:{number}"
                 for path in python_files()
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if "NotImplementedError" in line]
    assert offenders == []

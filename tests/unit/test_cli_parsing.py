"""Pure parts of the CLI: durations, names, and how argv reaches the commands."""

from __future__ import annotations

import click
import pytest

from labhop.cli import _split_jupyter_args, parse_duration
from labhop.errors import LabhopError
from labhop.session import default_name, validate_name


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("90", 90),
        ("90s", 90),
        ("30m", 1800),
        ("4h", 14400),
        ("1d", 86400),
        (" 2H ", 7200),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "-1", "4 hours", "1.5h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_duration(text)


def test_arguments_after_double_dash_go_to_jupyter() -> None:
    assert _split_jupyter_args(["gamer", "--keep", "--", "--debug", "--", "x"]) == (
        ["gamer", "--keep"],
        ["--debug", "--", "x"],
    )
    assert _split_jupyter_args(["gamer"]) == (["gamer"], [])


@pytest.mark.parametrize(
    ("root", "name"),
    [("", "home"), ("~", "home"), ("~/proj", "proj"), ("/data/my proj/", "my-proj"), ("/", "home")],
)
def test_default_name_comes_from_the_root_dir(root: str, name: str) -> None:
    assert default_name(root) == name


@pytest.mark.parametrize("name", ["../x", ".hidden", "a b", "x/y", ""])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(LabhopError):
        validate_name(name)

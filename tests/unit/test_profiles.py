"""The config file: parsing, checking, and which value wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from labhop.config import profiles
from labhop.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_a_missing_file_is_an_empty_config(tmp_path: Path) -> None:
    loaded = profiles.load(tmp_path / "nope.toml")
    assert loaded.locate("gamer", "env") is None


def test_host_wins_over_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, '[defaults]\nenv = "venv:~/base"\nidle_timeout = "4h"\n'
                           '[hosts.gamer]\nenv = "conda:pytorch"\nport = 8890\n')
    loaded = profiles.load(path)
    assert loaded.locate("gamer", "env") == ("conda:pytorch", "hosts.gamer")
    assert loaded.locate("gamer", "idle_timeout") == ("4h", "defaults")
    assert loaded.locate("other", "env") == ("venv:~/base", "defaults")
    assert loaded.locate("gamer", "port") == (8890, "hosts.gamer")
    assert loaded.path == path


@pytest.mark.parametrize(("text", "message"), [
    ('[hosts.gamer]\nenviron = "x"\n', "unknown key 'environ' in [hosts.gamer]"),
    ('[hosts.gamer]\nport = "8890"\n',
     'port in [hosts.gamer] must be a whole number, not "8890"'),
    ('[hosts.gamer]\nport = true\n', "port in [hosts.gamer] must be a whole number, not true"),
    ('[hosts.gamer]\nname = 4\n', "name in [hosts.gamer] must be text (in quotes), not 4"),
    ('[host.gamer]\nenv = "x"\n', "unknown section 'host'"),
    ('[hosts.gamer\n', "is not valid TOML"),
])
def test_mistakes_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=r".*") as caught:
        profiles.load(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_config_dir_honours_the_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LABHOP_CONFIG_DIR", str(tmp_path))
    assert profiles.config_path() == tmp_path / "config.toml"

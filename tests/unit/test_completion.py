"""Shell completion: the ssh_config parsing on text, and the installed `labhop` answering
click's completion protocol the way bash, zsh and fish call it (a real process, a temp HOME
with its own ~/.ssh/config and config.toml; nothing connects anywhere)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from labhop.config import hosts

LABHOP = Path(sys.executable).parent / "labhop"  # the entry point pip installed


def hosts_of(files: dict[str, str], start: str = "/h/.ssh/config") -> list[str]:
    """ssh_config_hosts over an in-memory file system of `files` (path -> text)."""

    def read_text(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]

    def expand(pattern: str) -> Iterable[str]:
        import fnmatch  # noqa: PLC0415 -- only this fake needs it

        # Reversed, so the test sees that the parser sorts (ssh's lexical order).
        return sorted((p for p in files if fnmatch.fnmatchcase(p, pattern)), reverse=True)

    return hosts.ssh_config_hosts(start, read_text=read_text, expand=expand,
                                       ssh_dir="/h/.ssh", home="/h")


def test_host_lines_give_names_and_skip_patterns() -> None:
    text = ("# my hosts\n"
            "Host gpubox gamer\n"
            "    HostName 10.0.0.7\n"
            "Host *.example !bad lab? *\n"
            "host=lower\n"
            "HOST = spaced\n"
            "\tHost\ttabbed  # a comment\n"
            'Host "quoted"\n'
            "Host gpubox\n"
            "Match host x\n"
            'Host "unclosed\n'
            "HostName notahost\n")
    assert hosts_of({"/h/.ssh/config": text}) == [
        "gpubox", "gamer", "lower", "spaced", "tabbed", "quoted"]


def test_include_follows_globs_relative_to_ssh_dir_in_lexical_order() -> None:
    files = {
        "/h/.ssh/config": "Host first\nInclude conf.d/*.conf ~/extra /abs/more\nHost last\n",
        "/h/.ssh/conf.d/b.conf": "Host b-host\n",
        "/h/.ssh/conf.d/a.conf": "Host a-host\n  Include nested\n",
        "/h/.ssh/conf.d/a.txt": "Host not-included\n",
        "/h/.ssh/nested": "Host nested-host\n",
        "/h/extra": "Host extra-host\n",
        "/abs/more": "Host abs-host\n",
    }
    assert hosts_of(files) == ["first", "a-host", "nested-host", "b-host", "extra-host",
                               "abs-host", "last"]


def test_missing_unreadable_and_looping_files_give_what_can_be_read() -> None:
    assert hosts_of({}) == []
    assert hosts_of({"/h/.ssh/config": "Include nothere\nHost ok\n"}) == ["ok"]
    # A file that includes itself stops at ssh's depth limit instead of recursing forever.
    assert hosts_of({"/h/.ssh/config": "Host loop\nInclude config\n"}) == ["loop"]

    def broken(path: str) -> str:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    assert hosts.ssh_config_hosts("/x", read_text=broken, expand=lambda p: [p],
                                       ssh_dir="/h/.ssh", home="/h") == []


def test_env_completes_the_kinds() -> None:
    assert hosts.env_candidates("") == [
        "conda:", "mamba:", "micromamba:", "venv:", "module:", "cmd:"]
    assert hosts.env_candidates("m") == ["mamba:", "micromamba:", "module:"]
    assert hosts.env_candidates("conda:py") == []


# ---------------------------------------------------------------------------------------
# The installed entry point, through click's environment protocol.


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A HOME whose ~/.ssh/config names hosts directly, through an Include glob, and in
    patterns; and a config.toml with two [hosts.*] tables."""
    ssh = tmp_path / "home" / ".ssh"
    (ssh / "config.d").mkdir(parents=True)
    (ssh / "config").write_text("Host gpubox *.example\n  HostName 127.0.0.1\n"
                                "Include config.d/*\nHost *\n  ServerAliveInterval 10\n")
    (ssh / "config.d" / "work").write_text("Host gpu-work bastion\n")
    config = tmp_path / "labhop-config"
    config.mkdir()
    (config / "config.toml").write_text('[hosts.lab-a]\nenv = "conda:x"\n[hosts.gpubox]\n')
    return tmp_path / "home"


def complete(home: Path, line: str, shell: str = "bash", *,
             config_dir: Path | None = None, cwd: Path | None = None) -> list[str]:
    """What `labhop` answers when `shell` asks to complete the last word of `line`
    (a line ending in a blank completes a new, empty word)."""
    words = line.split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    # fish passes the word being completed itself, bash and zsh its index.
    incomplete = "" if line.endswith(" ") else words[-1]
    env = {**os.environ, "HOME": str(home), "_LABHOP_COMPLETE": f"{shell}_complete",
           "COMP_WORDS": line, "COMP_CWORD": incomplete if shell == "fish" else str(cword),
           "LABHOP_CONFIG_DIR": str(config_dir or home.parent / "labhop-config")}
    done = subprocess.run([str(LABHOP)], env=env, capture_output=True, text=True,
                          timeout=30, check=False, cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stdout.splitlines() if line]  # none: one empty line
    if shell == "bash":  # "type,value" lines
        return [line.split(",", 1)[1] for line in lines]
    return lines


def test_entry_point_is_installed() -> None:
    assert LABHOP.is_file(), f"{LABHOP} missing: pip install -e '.[test]' into this venv"


def test_first_word_completes_commands_and_hosts(home: Path) -> None:
    assert complete(home, "labhop gp") == ["gpus", "gpubox", "gpu-work"]
    found = complete(home, "labhop ")
    assert {"start", "ls", "stop", "gpubox", "bastion", "lab-a"} <= set(found)
    assert not [name for name in found if "*" in name]


@pytest.mark.parametrize("command", ["start", "attach", "ls", "stop", "logs", "gpus"])
def test_host_of_every_command(home: Path, command: str) -> None:
    assert complete(home, f"labhop {command} ") == ["gpubox", "gpu-work", "bastion", "lab-a"]
    assert complete(home, f"labhop {command} l") == ["lab-a"]


def test_options_after_a_host_are_starts(home: Path) -> None:
    assert complete(home, "labhop gpubox --ke") == ["--keep"]
    assert complete(home, "labhop gpubox --app ") == ["lab", "notebook", "server"]
    assert complete(home, "labhop gpubox --env co") == ["conda:"]
    assert complete(home, "labhop --env ") == [
        "conda:", "mamba:", "micromamba:", "venv:", "module:", "cmd:"]
    assert "--idle-timeout" in complete(home, "labhop --")


def test_dash_f_typed_before_host_is_the_ssh_config_read(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "other_config"
    other.write_text("Host from-dash-f\n")
    # A relative -F is relative to the working directory, as for ssh.
    assert complete(home, "labhop ls -F other_config f", cwd=tmp_path) == ["from-dash-f"]
    assert complete(home, f"labhop -F {other} ") == ["from-dash-f", "lab-a", "gpubox"]
    assert complete(home, "labhop -F /nonexistent/config gpu") == ["gpubox"]  # config.toml's


def test_broken_configs_give_no_candidates_not_a_traceback(home: Path, tmp_path: Path
                                                           ) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.toml").write_text("[hosts.x\n")
    (home / ".ssh" / "config").write_bytes(b"Host \xff\xfe\nInclude /proc/1/mem\n")
    assert complete(home, "labhop gp", config_dir=broken) == ["gpus"]
    (home / ".ssh" / "config").unlink()
    (home / ".ssh" / "config").mkdir()  # a directory where the file should be
    assert complete(home, "labhop ls ", config_dir=broken) == []


def test_zsh_and_fish_answer_too(home: Path) -> None:
    # zsh: type, value, help lines; fish: "value\thelp" or "value" lines.
    zsh = complete(home, "labhop ls gpu", "zsh")
    assert zsh[0::3] == ["plain", "plain"] and zsh[1::3] == ["gpubox", "gpu-work"]
    fish = complete(home, "labhop gpubox --env ", "fish")
    assert [line.split("\t")[0] for line in fish][:2] == ["plain,conda:", "plain,mamba:"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_source_scripts(shell: str, tmp_path: Path) -> None:
    done = subprocess.run([str(LABHOP)], env={**os.environ, "_LABHOP_COMPLETE":
                                              f"{shell}_source"},
                          capture_output=True, text=True, timeout=30, check=True)
    assert "_LABHOP_COMPLETE" in done.stdout and "labhop" in done.stdout
    executable = shutil.which(shell)
    if shell == "bash":
        assert executable is not None
        script = tmp_path / "labhop.bash"
        script.write_text(done.stdout)
        checked = subprocess.run([executable, "-n", str(script)], capture_output=True,
                                 text=True, check=False)
        assert checked.returncode == 0, checked.stderr
    elif executable is not None:  # zsh/fish are not part of the test bed; check if present
        checked = subprocess.run([executable, "-n", "-c", done.stdout],
                                 capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stderr


def test_bash_script_completes_in_bash(home: Path, tmp_path: Path) -> None:
    """The bash script itself, run by bash as readline would: COMPREPLY gets the hosts, and
    `conda:` gets no space after it (compopt is recorded by a stand-in function)."""
    source = subprocess.run([str(LABHOP)], env={**os.environ, "_LABHOP_COMPLETE": "bash_source"},
                            capture_output=True, text=True, timeout=30, check=True).stdout
    assert "compopt -o nospace" in source
    driver = (f"{source}\n"
              'compopt() { local IFS=" "; echo "compopt $*"; }\n'
              'COMP_WORDS=(labhop gpubox --env co); COMP_CWORD=3\n'
              '_labhop_completion labhop; printf "reply %s\\n" "${COMPREPLY[@]}"\n'
              'COMPREPLY=(); COMP_WORDS=(labhop ls g); COMP_CWORD=2\n'
              '_labhop_completion labhop; printf "reply %s\\n" "${COMPREPLY[@]}"\n')
    env = {**os.environ, "HOME": str(home), "LABHOP_CONFIG_DIR": str(home.parent /
                                                                       "labhop-config"),
           "PATH": f"{LABHOP.parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "--norc", "-c", driver], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "compopt -o nospace", "reply conda:", "reply gpubox", "reply gpu-work"]

"""The PATH to open: how labhop normalizes what was typed, the URL path each app gets for
it (pure, on text), and the remote check (open_path.sh, run by the local `sh` through the
real launch and submit scripts)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from labhop import model, opening
from labhop.cli.main import main
from labhop.errors import CommandLineError, ExitStatus
from labhop.remote import protocol, scripts
from tests.unit.test_remote_scripts import KINDS, alive, fake_venv, launch_script, request, run_sh


@pytest.mark.parametrize(("typed", "sent"), [
    ("nb/demo.ipynb", "nb/demo.ipynb"),
    ("./nb//demo.ipynb", "nb/demo.ipynb"),
    ("nb/", "nb"),
    (".", "."),
    ("./", "."),
    ("nb/../other", "other"),
    ("../proj/nb", "../proj/nb"),
    ("a/../../b", "../b"),
    ("/srv/data/x.ipynb", "/srv/data/x.ipynb"),
    ("//srv//data/", "/srv/data"),
    ("/a/../b", "/b"),
    ("~", "~"),
    ("~/", "~"),
    ("~/proj/./nb/", "~/proj/nb"),
    # `..` right after ~ stays: only the remote knows where its home's parent leads.
    ("~/../shared/x", "~/../shared/x"),
    ("~user/x", "~user/x"),
    ("my notebook #1?.ipynb", "my notebook #1?.ipynb"),
])
def test_normalize_folds_what_the_remote_need_not_see(typed: str, sent: str) -> None:
    assert opening.normalize(typed) == sent


def test_an_empty_path_is_a_command_line_error() -> None:
    with pytest.raises(CommandLineError, match="bad PATH ''") as caught:
        opening.normalize("")
    assert caught.value.status == ExitStatus.USAGE


def test_an_empty_path_typed_exits_2_before_connecting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LABHOP_CONFIG_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as caught:
        main(["nosuchhost.invalid", "", "--no-browser"])
    assert caught.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "labhop: error: bad PATH '': name a notebook or folder on the remote, relative to --dir",
        "Try 'labhop start --help' for help."]


@pytest.mark.parametrize(("app", "path", "kind", "url"), [
    ("lab", "nb/demo.ipynb", "file", "/lab/tree/nb/demo.ipynb"),
    ("lab", "nb/data", "dir", "/lab/tree/nb/data"),
    ("lab", "my notebook.ipynb", "file", "/lab/tree/my%20notebook.ipynb"),
    ("lab", "a#b/c?d.ipynb", "file", "/lab/tree/a%23b/c%3Fd.ipynb"),
    ("lab", "100%/x&y=1;z", "file", "/lab/tree/100%25/x%26y%3D1%3Bz"),
    ("lab", "données/été ü.ipynb", "file",
     "/lab/tree/donn%C3%A9es/%C3%A9t%C3%A9%20%C3%BC.ipynb"),
    ("lab", "~tilde/x+y.ipynb", "file", "/lab/tree/~tilde/x%2By.ipynb"),
    ("lab", ".", "dir", "/lab"),
    ("notebook", "nb/demo.ipynb", "file", "/notebooks/nb/demo.ipynb"),
    ("notebook", "nb/train.py", "file", "/edit/nb/train.py"),
    ("notebook", "nb/x.IPYNB", "file", "/edit/nb/x.IPYNB"),
    ("notebook", "nb/data", "dir", "/tree/nb/data"),
    ("notebook", "nb/data.ipynb", "dir", "/tree/nb/data.ipynb"),
    ("notebook", "a b/#1", "dir", "/tree/a%20b/%231"),
    ("notebook", ".", "dir", "/tree"),
    ("server", "nb/demo.ipynb", "file", "/"),
    ("server", "nb", "dir", "/"),
    ("lab", "", "", "/lab"),
    ("notebook", "nb", "", "/tree"),
])
def test_url_path_opens_the_path_in_each_app(app: str, path: str, kind: str,
                                              url: str) -> None:
    assert opening.url_path(app, path, kind) == url


# -- the remote check ---------------------------------------------------------------------
@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A remote home with ~/proj (a notebook, a folder, odd names), a file beside it, and
    a venv whose jupyter-lab notes that it ran and exits at once."""
    (tmp_path / "proj/nb/data").mkdir(parents=True)
    (tmp_path / "proj/nb/demo.ipynb").write_text("{}")
    (tmp_path / "proj/nb/ü x #1.ipynb").write_text("{}")
    (tmp_path / "outside.txt").write_text("not in the root")
    (tmp_path / "link").symlink_to(tmp_path / "proj")
    fake_venv(tmp_path / "env", with_jupyter=False)
    stub = tmp_path / "env/bin/jupyter-lab"
    stub.write_text(f"#!/bin/sh\necho started >> {tmp_path}/jupyter-ran\n")
    stub.chmod(0o755)
    return tmp_path


def launch(home: Path, path: str, root_dir: str = "~/proj", **values: object) -> tuple[
        int, protocol.ScriptOutput, str]:
    script = launch_script(request(env=model.EnvSpec("venv", "~/env"),
                                   root_dir=root_dir, open_path=path, **values))
    result = run_sh(script, home)
    if result.returncode != 0:
        return result.returncode, protocol.parse_failure(result.stdout), result.stdout
    return 0, protocol.parse_output(result.stdout, protocol.LAUNCH_KEYS), result.stdout


@pytest.mark.parametrize(("path", "root_dir", "where", "kind"), [
    ("nb/demo.ipynb", "~/proj", "nb/demo.ipynb", "file"),
    ("nb", "~/proj", "nb", "dir"),
    ("nb/data", "~/proj/", "nb/data", "dir"),
    (".", "~/proj", ".", "dir"),
    ("nb/ü x #1.ipynb", "~/proj", "nb/ü x #1.ipynb", "file"),
    ("~/proj/nb/demo.ipynb", "~/proj", "nb/demo.ipynb", "file"),
    ("~/proj", "~/proj", ".", "dir"),
    ("../proj/nb/demo.ipynb", "~/proj", "nb/demo.ipynb", "file"),
    ("proj/nb", "", "proj/nb", "dir"),
    ("~/proj/nb", "", "proj/nb", "dir"),
    # The root through a symlink: either spelling of the path is inside it.
    ("~/link/nb", "~/link", "nb", "dir"),
    ("~/proj/nb/demo.ipynb", "~/link", "nb/demo.ipynb", "file"),
    ("~/link/nb/demo.ipynb", "~/proj", "nb/demo.ipynb", "file"),
])
def test_the_path_is_reported_relative_to_the_root_with_its_kind(
        home: Path, path: str, root_dir: str, where: str, kind: str) -> None:
    rc, output, stdout = launch(home, path, root_dir)
    assert rc == 0, stdout
    assert (output.get("open_path"), output.get("open_kind")) == (where, kind)
    # The launch starts Jupyter detached: the stand-in notes it ran a moment later.
    deadline = time.monotonic() + 10
    while not (home / "jupyter-ran").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (home / "jupyter-ran").exists()


def test_an_absolute_path_is_found_inside_the_root(home: Path) -> None:
    rc, output, stdout = launch(home, f"{home}/proj/nb/demo.ipynb")
    assert rc == 0, stdout
    assert output.get("open_path") == "nb/demo.ipynb"


def test_a_path_the_laptop_expanded_is_read_in_the_remote_home(home: Path) -> None:
    rc, output, stdout = launch(home, "/Users/me/proj/nb/demo.ipynb",
                                root_dir="/Users/me/proj", local_home="/Users/me")
    assert rc == 0, stdout
    assert output.get("open_path") == "nb/demo.ipynb"


def test_without_a_path_nothing_is_said_about_one(home: Path) -> None:
    rc, output, stdout = launch(home, "")
    assert rc == 0, stdout
    assert "open_path" not in output.fields
    assert "open_kind" not in output.fields


@pytest.mark.parametrize(("path", "message"), [
    ("nb/missing.ipynb", "no such file or folder on {host}: nb/missing.ipynb "
                         "(relative to the server root {home}/proj)"),
    ("~/proj/missing", "no such file or folder on {host}: ~/proj/missing"),
    ("{home}/outside.txt", "{home}/outside.txt is outside the server root {home}/proj on "
                           "{host}; PATH must be inside --dir"),
    ("../outside.txt", "../outside.txt is outside the server root {home}/proj on {host}; "
                       "PATH must be inside --dir"),
    ("~/../", "~/../ is outside the server root"),
])
def test_a_missing_or_outside_path_starts_nothing_and_leaves_nothing(
        home: Path, path: str, message: str) -> None:
    host = protocol.HOST_PLACEHOLDER  # backends.script_failure names the host as typed
    rc, failure, stdout = launch(home, path.format(home=home))
    assert rc == protocol.Exit.ROOT_DIR_MISSING, stdout
    assert failure.get("error").startswith(message.format(home=home, host=host))
    assert not (home / "jupyter-ran").exists()
    assert not (home / ".local/state/labhop/servers/proj").exists()


@pytest.mark.parametrize("path", ["escape.txt", "nb/../escape.txt", "escdir", "escdir/outside.txt",
                                  "{home}/proj/escape.txt", "~/proj/escdir", "chain.txt"])
def test_a_symlink_inside_the_root_that_leads_out_of_it_is_outside(home: Path,
                                                                   path: str) -> None:
    """--dir is a boundary: a link in the root to a file or folder elsewhere is refused
    like the path it leads to (exit 22), however the PATH is spelled."""
    (home / "proj/escape.txt").symlink_to(home / "outside.txt")
    (home / "proj/escdir").symlink_to(home)
    (home / "proj/hop.txt").symlink_to("escape.txt")  # a link to a link, relative
    (home / "proj/chain.txt").symlink_to("hop.txt")
    rc, failure, stdout = launch(home, path.format(home=home))
    assert rc == protocol.Exit.ROOT_DIR_MISSING, stdout
    assert "is outside the server root" in failure.get("error")
    assert not (home / "jupyter-ran").exists()


def test_a_symlink_that_stays_inside_the_root_is_opened_as_typed(home: Path) -> None:
    (home / "proj/shortcut.ipynb").symlink_to("nb/demo.ipynb")
    rc, output, stdout = launch(home, "shortcut.ipynb")
    assert rc == 0, stdout
    assert (output.get("open_path"), output.get("open_kind")) == ("shortcut.ipynb", "file")


def test_a_missing_root_is_still_reported_as_the_root(home: Path) -> None:
    rc, failure, _ = launch(home, "nb", root_dir="~/nowhere")
    assert rc == protocol.Exit.ROOT_DIR_MISSING
    assert f"server root {home}/nowhere does not exist" in failure.get("error")


def test_a_running_server_finds_the_path_in_its_own_root(home: Path) -> None:
    """Starting under a name that runs attaches to it: PATH is then relative to the root
    that server has, not to this --dir."""
    (home / "env/bin/jupyter-lab").write_text("#!/bin/sh\nexec sleep 30\n")
    (home / "elsewhere").mkdir()
    rc, first, stdout = launch(home, "nb")
    pid = int(first.get("pid") or 0)
    try:
        assert rc == 0, stdout
        rc, again, stdout = launch(home, "nb/demo.ipynb", root_dir="~/elsewhere")
        assert rc == 0, stdout
        assert again.get("existing") == "1"
        assert (again.get("open_path"), again.get("open_kind")) == ("nb/demo.ipynb", "file")
        rc, failure, _ = launch(home, "nb/missing", root_dir="~/elsewhere")
        assert rc == protocol.Exit.ROOT_DIR_MISSING
        assert f"relative to the server root {home}/proj" in failure.get("error")
        assert alive(pid), "a PATH that is not there must not stop the running server"
    finally:
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)


def fake_sbatch(home: Path) -> Path:
    """An sbatch that notes it ran and answers job 7; squeue knows no job."""
    bin_dir = home / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncat > /dev/null\necho ran >> {home}/sbatch-ran\n"
                                    "echo 7\n")
    (bin_dir / "squeue").write_text("#!/bin/sh\nexit 0\n")
    for name in ("sbatch", "squeue"):
        (bin_dir / name).chmod(0o755)
    return bin_dir


def test_the_login_node_checks_the_path_before_it_submits(home: Path) -> None:
    bin_dir = str(fake_sbatch(home))
    missing = scripts.slurm_submit_script(
        request(root_dir="~/proj", open_path="nb/missing.ipynb"), (), kinds=KINDS)
    result = run_sh(missing, home, bin_dir)
    assert result.returncode == protocol.Exit.ROOT_DIR_MISSING
    assert "no such file or folder" in protocol.parse_failure(result.stdout).get("error")
    assert not (home / "sbatch-ran").exists()
    assert not (home / ".local/state/labhop/servers/proj").exists()

    found = scripts.slurm_submit_script(request(root_dir="~/proj", open_path="nb/demo.ipynb"),
                                       (), kinds=KINDS)
    result = run_sh(found, home, bin_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    output = protocol.parse_output(result.stdout, protocol.SUBMIT_KEYS)
    assert (output.get("jobid"), output.get("open_path"), output.get("open_kind")) == (
        "7", "nb/demo.ipynb", "file")

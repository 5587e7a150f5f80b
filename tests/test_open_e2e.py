"""`labhop HOST PATH` end to end: the browser (headless Chromium, as in
test_browser_e2e) opens the notebook or folder named on the command line, on the real
test bed; a PATH that is not there starts nothing and leaves nothing."""

from __future__ import annotations

import http.client
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.labhop_cli import LabhopProcess, run_labhop
from tests.test_browser_e2e import CHROMIUM_FLAGS
from tests.test_slurm_e2e import squeue
from tests.test_start_e2e import (
    STATE,
    URL,
    browser_env,
    stop_with_ctrl_c,
    wait_for_file,
    wait_until_no_user_processes,
)
from tests.testbed import HOME, SlurmCluster, Sshd

pytestmark = pytest.mark.e2e

# Names that need quoting in a URL (a space, `#`, non-ASCII), so the test sees that the
# path reaches Jupyter as it is.
NOTEBOOK = "nb/demo ü #1.ipynb"
FOLDER = "nb/my data #2"
INSIDE_FOLDER = "only-in-my-data.txt"
# What the notebook shows once it is open: a stored output, rendered by JupyterLab.
OUTPUT_TEXT = "labhop-opened-this-notebook"
NOTEBOOK_JSON = {
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Opened by labhop"]},
        {"cell_type": "code", "execution_count": 1, "metadata": {},
         "outputs": [{"name": "stdout", "output_type": "stream", "text": [OUTPUT_TEXT + "\n"]}],
         "source": [f"print({OUTPUT_TEXT!r})"]},
    ],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                "name": "python3"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


# JupyterLab keeps what was open in lhtest's workspace and restores it next time: these
# tests keep theirs apart, so that neither they nor the other browser tests see what the
# other opened.
WORKSPACES = HOME / "nb/.workspaces"
OWN_WORKSPACES = ("--", f"--LabApp.workspaces_dir={WORKSPACES}")


@pytest.fixture
def remote_files(sshd: Sshd) -> Iterator[None]:
    """~/nb on the remote, made by lhtest (over ssh) as a user's files would be."""
    script = (f"set -e; mkdir -p ~/{shlex.quote(FOLDER)} {WORKSPACES}\n"
              f"cat > ~/{shlex.quote(NOTEBOOK)} <<'EOF'\n{json.dumps(NOTEBOOK_JSON)}\nEOF\n"
              f"echo inside > ~/{shlex.quote(FOLDER)}/{INSIDE_FOLDER}\n")
    made = sshd.run(sshd.alias(), "sh -s", stdin_text=script)
    assert made.returncode == 0, made.stderr
    try:
        yield
    finally:
        sshd.run(sshd.alias(), "rm -rf ~/nb")


def chromium_env(program: str, tmp_path: Path, dom: Path) -> dict[str, str]:
    """$BROWSER as in test_browser_e2e: headless Chromium prints the page it ended on."""
    log = tmp_path / "chromium.log"
    return browser_env(tmp_path, f"for attempt in 1 2 3; do\n"
                       f"  {program} {CHROMIUM_FLAGS} --user-data-dir={tmp_path}/profile$attempt "
                       f'--dump-dom "$1" > {dom}.part 2>>{log}\n'
                       f"  [ -s {dom}.part ] && mv {dom}.part {dom} && exit 0\n"
                       f"done\n")


def opened_page(labhop: LabhopProcess, dom: Path, tmp_path: Path) -> tuple[str, str]:
    """(the URL path labhop printed, the page Chromium ended on)."""
    url = labhop.wait_for(URL, timeout=90)
    wait_for_file(dom, timeout=180)
    log = tmp_path / "chromium.log"
    assert dom.exists(), "Chromium printed no page:\n" + (
        log.read_text(errors="replace")[-3000:] if log.exists() else "")
    return url["path"], dom.read_text(errors="replace")


def test_lab_opens_the_notebook_named_on_the_command_line(
        sshd: Sshd, chromium: str, remote_files: None, tmp_path: Path) -> None:
    dom = tmp_path / "dom.html"
    with LabhopProcess.start("-F", str(sshd.config), "gpubox", NOTEBOOK, *OWN_WORKSPACES,
                             env_overrides=chromium_env(chromium, tmp_path, dom)) as labhop:
        path, page = opened_page(labhop, dom, tmp_path)
        assert path == "/lab/tree/nb/demo%20%C3%BC%20%231.ipynb"
        # The notebook is open in a tab of its own, its stored output rendered.
        assert re.search(r'class="lm-TabBar-tabLabel[^"]*"[^>]*>demo ü #1\.ipynb<', page), \
            page[-3000:]
        assert OUTPUT_TEXT + "\n</pre>" in page or f">{OUTPUT_TEXT}\n<" in page, page[-3000:]
        stop_with_ctrl_c(labhop)


def test_lab_opens_the_folder_named_on_the_command_line(
        sshd: Sshd, chromium: str, remote_files: None, tmp_path: Path) -> None:
    dom = tmp_path / "dom.html"
    with LabhopProcess.start("-F", str(sshd.config), "gpubox", f"~/{FOLDER}/", *OWN_WORKSPACES,
                             env_overrides=chromium_env(chromium, tmp_path, dom)) as labhop:
        path, page = opened_page(labhop, dom, tmp_path)
        assert path == "/lab/tree/nb/my%20data%20%232"
        # The file browser shows that folder, not the home it is rooted at.
        listed = re.findall(r'jp-DirListing-itemText"[^>]*><span>([^<]*)</span>', page)
        assert listed == [INSIDE_FOLDER], page[-3000:]
        stop_with_ctrl_c(labhop)


def test_notebook_gets_its_own_page_for_a_folder(sshd: Sshd, remote_files: None) -> None:
    with LabhopProcess.start("-F", str(sshd.config), "gpubox", "--app", "notebook",
                             "--no-browser", FOLDER) as labhop:
        url = labhop.wait_for(URL, timeout=90)
        assert url["path"] == "/tree/nb/my%20data%20%232"
        conn = http.client.HTTPConnection("127.0.0.1", int(url["port"]), timeout=30)
        try:
            conn.request("GET", f"{url['path']}?token={url['token']}")
            response = conn.getresponse()
            body = response.read().decode()
        finally:
            conn.close()
        # Notebook's tree page answers 404 for a folder it cannot find.
        assert response.status == 200
        assert re.search(r'"treePath":\s*"nb/my data #2"', body), body[:2000]
        stop_with_ctrl_c(labhop)


def test_a_missing_path_is_one_line_and_starts_nothing(sshd: Sshd, remote_files: None) -> None:
    result = run_labhop("-F", str(sshd.config), "gpubox", "--no-browser", "nb/missing.ipynb",
                        timeout=90)
    assert result.rc == 22, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("labhop: error:")]
    # The host as typed, not the remote's own hostname.
    assert errors == ["labhop: error: no such file or folder on gpubox: "
                      f"nb/missing.ipynb (relative to the server root {HOME})"], result.stderr
    assert wait_until_no_user_processes() == []
    assert not STATE.exists() or list(STATE.iterdir()) == []
    listed = run_labhop("ls", "-F", str(sshd.config), "gpubox", "--json", timeout=60)
    assert listed.rc == 0, listed.stderr
    assert json.loads(listed.stdout) == [], listed.stdout + listed.stderr


def test_a_path_outside_the_root_is_refused(sshd: Sshd, remote_files: None) -> None:
    result = run_labhop("-F", str(sshd.config), "gpubox", "--no-browser", "--dir", "~/proj",
                        "~/nb", timeout=90)
    assert result.rc == 22, result.stderr
    assert "~/nb is outside the server root" in result.stderr
    assert "PATH must be inside --dir" in result.stderr
    assert wait_until_no_user_processes() == []


def test_on_slurm_the_login_node_checks_the_path_before_it_submits(
        slurm: SlurmCluster, remote_files: None) -> None:
    sshd = slurm.login
    missing = run_labhop("-F", str(sshd.config), "gpubox", "--no-browser", "--slurm",
                         "-p gpu -t 00:10:00", "nb/missing.ipynb", timeout=90)
    assert missing.rc == 22, missing.stderr
    assert "no such file or folder" in missing.stderr and "nb/missing.ipynb" in missing.stderr
    assert squeue() == ""
    assert not STATE.exists() or list(STATE.iterdir()) == []

    with LabhopProcess.start("-F", str(sshd.config), "gpubox", "--no-browser", "--slurm",
                             "-p gpu -t 00:10:00", NOTEBOOK) as run:
        url = run.wait_for(URL, timeout=120)
        assert url["path"] == "/lab/tree/nb/demo%20%C3%BC%20%231.ipynb"
        run.interrupt()
        assert run.wait(60) == 0, run.output
    assert squeue() == ""

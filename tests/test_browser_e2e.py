"""JupyterLab in a real browser, opened by labhop the way a user's desktop would: headless
Chromium (Debian's package) gets the private redirect page and must end up showing the
remote's files, which only happens when the page, its scripts and the REST API all work
through the tunnel."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.labhop_cli import LabhopProcess
from tests.test_start_e2e import URL, stop_with_ctrl_c
from tests.testbed import Sshd

pytestmark = pytest.mark.e2e

# The flags this machine's closed network needs (see the env notes): no background
# requests to Google's services, no sandbox as root, a fresh profile.
CHROMIUM_FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
    "--disable-background-networking --disable-component-update --disable-sync "
    "--virtual-time-budget=20000"
)


@pytest.fixture
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        reason = "chromium is not installed: run `sudo scripts/dev setup`"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def test_the_browser_opens_a_working_jupyterlab(sshd: Sshd, chromium: str,
                                                tmp_path: Path) -> None:
    dom = tmp_path / "dom.html"
    browser = tmp_path / "browser"
    browser.write_text(
        "#!/bin/sh\n"
        f'exec {chromium} {CHROMIUM_FLAGS} --user-data-dir={tmp_path}/profile '
        f'--dump-dom "$1" > {dom} 2>/dev/null\n'
    )
    browser.chmod(0o755)
    env = {"BROWSER": f"{browser} %s", "DISPLAY": ":99"}
    with LabhopProcess.start("-F", str(sshd.config), "gpubox", "--dir", "~/proj",
                             env_overrides=env) as labhop:
        labhop.wait_for(URL, timeout=90)
        deadline = time.monotonic() + 60
        while not (dom.exists() and dom.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.5)
        page = dom.read_text(errors="replace")
        # The file browser lists ~/proj on the remote: JupyterLab's scripts ran and its
        # contents API answered, all through 127.0.0.1 and the tunnel.
        assert "jp-LabShell" in page
        assert "hello.txt" in page
        stop_with_ctrl_c(labhop)

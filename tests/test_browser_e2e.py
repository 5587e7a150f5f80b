"""JupyterLab in a real browser, opened by labhop the way a user's desktop would: headless
Chromium (Debian's package) gets the private redirect page and must end up showing the
remote's files, which only happens when the page, its scripts and the REST API all work
through the tunnel."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.labhop_cli import LabhopProcess
from tests.test_start_e2e import URL, browser_env, stop_with_ctrl_c, wait_for_file
from tests.testbed import Sshd

pytestmark = pytest.mark.e2e

# The flags this machine's closed network needs (see the env notes): no background
# requests to Google's services, no sandbox as root, a fresh profile.
CHROMIUM_FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
    "--disable-background-networking --disable-component-update --disable-sync "
    "--virtual-time-budget=20000"
)



def test_the_browser_opens_a_working_jupyterlab(sshd: Sshd, chromium: str,
                                                tmp_path: Path) -> None:
    dom = tmp_path / "dom.html"
    log = tmp_path / "chromium.log"
    # A headless Chromium now and then exits without printing the page (seen once in a
    # full run); like a user reloading, try again, and keep its messages for the report.
    env = browser_env(tmp_path, f"for attempt in 1 2 3; do\n"
                      f"  {chromium} {CHROMIUM_FLAGS} --user-data-dir={tmp_path}/profile$attempt "
                      f'--dump-dom "$1" > {dom}.part 2>>{log}\n'
                      f"  [ -s {dom}.part ] && mv {dom}.part {dom} && exit 0\n"
                      f"done\n")
    with LabhopProcess.start("-F", str(sshd.config), "gpubox", "--dir", "~/proj",
                             env_overrides=env) as labhop:
        labhop.wait_for(URL, timeout=90)
        wait_for_file(dom, timeout=180)
        assert dom.exists(), "Chromium printed no page:\n" + log.read_text(errors="replace")[-3000:]
        page = dom.read_text(errors="replace")
        # The file browser lists ~/proj on the remote: JupyterLab's scripts ran and its
        # contents API answered, all through 127.0.0.1 and the tunnel.
        assert "jp-LabShell" in page
        assert "hello.txt" in page
        stop_with_ctrl_c(labhop)

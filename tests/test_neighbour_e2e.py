"""Another user of the same machines (tests/neighbour.py) against a labhop session: what an
open JupyterLab tab hands a squatter of the port labhop let go of opens nothing, a port
race on the host's TCP fallback gives her nothing, and attaching never ends another
labhop's session.

The tab is a real headless Chromium running JupyterLab; the squatter runs as the second
local user `lhneighbour`, binds the freed port, and keeps every request the tab sends.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import re
import signal
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import jupyter_api
from tests.labhop_cli import LabhopProcess, run_labhop
from tests.neighbour import Squatter, credentials
from tests.relay import Relay, write_flaky_config
from tests.test_start_e2e import URL, stop_with_ctrl_c
from tests.testbed import USER, Sshd, start_sshd

pytestmark = pytest.mark.e2e

TAB_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync")



@contextmanager
def tab(chromium: str, url: str, profile: Path) -> Iterator[None]:
    """A browser tab showing `url` until the block ends (a headless Chromium of its own,
    stopped by its process group)."""
    browser = subprocess.Popen([chromium, *TAB_FLAGS, f"--user-data-dir={profile}", url],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        yield
    finally:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.wait()


def ctrl_c(labhop: LabhopProcess) -> None:
    """Ctrl+C a labhop that leaves its server running (--keep, attach)."""
    labhop.interrupt()
    assert labhop.wait(30) == 0, labhop.output


def listed(sshd: Sshd) -> list[dict[str, Any]]:
    result = run_labhop("ls", "-F", str(sshd.config), "gpubox", "--json")
    assert result.rc == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def established_to(port: int) -> int:
    """How many TCP connections to 127.0.0.1:`port` are open here (the tab's)."""
    wanted = f"0100007F:{port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                count += fields[2] == wanted and fields[3] == "01"
    return count


def wait_for_tab(port: int, timeout: float = 60) -> None:
    """Until JupyterLab has loaded in the tab and polls the server (its connections)."""
    deadline = time.monotonic() + timeout
    while established_to(port) == 0:
        assert time.monotonic() < deadline, "the browser tab never connected"
        time.sleep(0.2)
    time.sleep(8)  # its scripts load, then it polls kernels, sessions, terminals, ...


def replay(request: dict[str, Any], port: int) -> tuple[int, str]:
    """Send a captured request again, headers verbatim (Host too: Jupyter names its login
    cookie after it), to 127.0.0.1:`port`: the status and where a redirect leads."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {key: value for key, value in request["headers"].items()
                   if key.lower() not in ("content-length", "connection")}
        connection.request(request["method"], request["path"], headers=headers,
                           body=b"" if request["method"] in ("POST", "PUT", "PATCH") else None)
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Location") or ""
    finally:
        connection.close()


def assert_replays_open_nothing(captured: list[dict[str, Any]], port: int) -> None:
    replayable = [request for request in captured if credentials(request)
                  and "upgrade" not in {key.lower() for key in request["headers"]}]
    assert replayable, f"the tab sent nothing with credentials: {captured[:3]}"
    for request in replayable:
        status, location = replay(request, port)
        # Refused, or sent to the login page: never the server's answer.
        assert status in (401, 403) or (status == 302 and "/login" in location), (
            request["method"], request["path"], status, location)


def token_of(request: dict[str, Any]) -> str:
    headers = {key.lower(): value for key, value in request["headers"].items()}
    match = re.search(r"token ([0-9a-f]+)", headers.get("authorization", ""))
    return match.group(1) if match else ""


def test_what_a_tab_hands_a_squatter_opens_nothing_after_a_move_or_a_keep_exit(
        sshd: Sshd, chromium: str, tmp_path: Path) -> None:
    with Relay.start(sshd.port) as relay:
        config = write_flaky_config(sshd, relay, directory=tmp_path, options={
            "ServerAliveInterval": "1", "ServerAliveCountMax": "3"})
        with LabhopProcess.start("-F", str(config), "gpubox-flaky", "--name", "tok",
                                 "--keep", "--no-browser") as run:
            first = run.wait_for(URL, timeout=90)
            old_port = int(first["port"])
            _, kernel = jupyter_api.execute(f"http://127.0.0.1:{old_port}", first["token"],
                                            "x = 41")
            with tab(chromium, f"http://127.0.0.1:{old_port}/lab?token={first['token']}",
                     tmp_path / "tab1"):
                wait_for_tab(old_port)
                # The network drops; the neighbour takes the port as soon as it is free.
                with Squatter.start("port", str(old_port)) as squatter:
                    relay.pause()
                    assert squatter.wait_bound(timeout=60) == old_port
                    relay.resume()
                    moved = run.wait_for(rf"moved to \d+: {URL}", timeout=120)
                    captured = squatter.wait_requests(2, timeout=90, where=token_of)
            assert {token_of(request) for request in captured} - {""} == {first["token"]}
            new_port = int(moved["port"])
            assert moved["token"] != first["token"]
            assert_replays_open_nothing(captured, new_port)
            # The server and its kernel went on, on the new port, with the new token.
            base = f"http://127.0.0.1:{new_port}"
            output, _ = jupyter_api.execute(base, moved["token"], "x + 1", kernel_id=kernel)
            assert output.strip() == "42"

            # A --keep exit: the port goes back, the tab open on it stays.
            with tab(chromium, f"{base}/lab?token={moved['token']}", tmp_path / "tab2"):
                wait_for_tab(new_port)
                with Squatter.start("port", str(new_port)) as squatter:
                    ctrl_c(run)
                    assert squatter.wait_bound(timeout=30) == new_port
                    kept = squatter.wait_requests(2, timeout=90, where=token_of)
    assert {token_of(request) for request in kept} - {""} == {moved["token"]}
    with LabhopProcess.start("attach", "-F", str(sshd.config), "gpubox", "tok",
                             "--no-browser") as attached:
        again = attached.wait_for(URL, timeout=60)
        assert_replays_open_nothing(kept, int(again["port"]))
        output, _ = jupyter_api.execute(f"http://127.0.0.1:{again['port']}", again["token"],
                                        "x + 2", kernel_id=kernel)
        assert output.strip() == "43"
        ctrl_c(attached)
    assert run_labhop("stop", "-F", str(sshd.config), "gpubox", "tok").rc == 0


@pytest.fixture
def nostream_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """An sshd that refuses Unix-socket forwarding: labhop's servers there use TCP."""
    with start_sshd(tmp_path_factory.mktemp("neighbour-nostream"), host_alias="nostream",
                    sshd_options={"AllowStreamLocalForwarding": "no"}) as server:
        yield server


def test_a_neighbour_racing_for_the_tcp_port_gets_nothing(nostream_sshd: Sshd) -> None:
    """On the TCP fallback the server takes a port of its own choosing (none on any command
    line to race for), and labhop talks to it only once that port is the server's."""
    with Squatter.start("race", str(pwd.getpwnam(USER).pw_uid)) as squatter:
        with LabhopProcess.start("-F", str(nostream_sshd.config), "nostream", "--name", "race",
                                 "--no-browser") as run:
            url = run.wait_for(URL, timeout=120)
            assert "using TCP on its loopback" in run.output
            output, _ = jupyter_api.execute(f"http://127.0.0.1:{url['port']}", url["token"],
                                            "print(6 * 7)")
            assert output.strip() == "42"
            stop_with_ctrl_c(run)
        time.sleep(0.5)
    assert [event for event in squatter.events if "saw" in event] == []
    assert squatter.requests == []


def test_attaching_never_ends_another_labhops_session(sshd: Sshd) -> None:
    """Two labhops on one name: the second one's Ctrl+C leaves the first attached, its
    URL working; `ls` shows both while both are there."""
    with LabhopProcess.start("-F", str(sshd.config), "gpubox", "--name", "two",
                             "--no-browser") as first:
        url = first.wait_for(URL, timeout=90)
        with LabhopProcess.start("attach", "-F", str(sshd.config), "gpubox", "two",
                                 "--no-browser") as second:
            second.wait_for(URL, timeout=60)
            [row] = [row for row in listed(sshd) if row["name"] == "two"]
            assert row["state"] == "attached"
            assert row["owner"].count(" pid ") == 2
            ctrl_c(second)
        [row] = [row for row in listed(sshd) if row["name"] == "two"]
        assert row["state"] == "attached"
        assert row["owner"].count(" pid ") == 1
        assert f"pid {first.pid}" in row["owner"]
        assert jupyter_api.api_status(f"http://127.0.0.1:{url['port']}", url["token"])
        stop_with_ctrl_c(first)


def test_a_token_left_behind_by_ctrl_c_is_refused(sshd: Sshd) -> None:
    """Without a tab: the URL printed by a labhop that exited with --keep stops working,
    while a labhop attached at the same time keeps its own."""
    with LabhopProcess.start("-F", str(sshd.config), "gpubox", "--name", "left", "--keep",
                             "--no-browser") as run:
        url = run.wait_for(URL, timeout=90)
        ctrl_c(run)
    with LabhopProcess.start("attach", "-F", str(sshd.config), "gpubox", "left",
                             "--no-browser") as attached:
        again = attached.wait_for(URL, timeout=60)
        base = f"http://127.0.0.1:{again['port']}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            jupyter_api.api_status(base, url["token"])
        assert refused.value.code == 403
        assert jupyter_api.api_status(base, again["token"])
        ctrl_c(attached)
    assert run_labhop("stop", "-F", str(sshd.config), "gpubox", "left").rc == 0

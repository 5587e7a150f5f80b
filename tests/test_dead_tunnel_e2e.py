"""A browser tab whose tunnel died without a word (the laptop moved to another network)
keeps no kernel "connected": Jupyter's websocket pings find the dead socket well within
`--idle-timeout`, so the idle kernel is culled on time."""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path

import pytest
import websocket

from tests import jupyter_api
from tests.labhop_cli import LabhopProcess
from tests.relay import Relay, write_flaky_config
from tests.test_start_e2e import STATE, URL, wait_until_no_user_processes
from tests.testbed import Sshd

pytestmark = pytest.mark.e2e

IDLE_TIMEOUT_S = 60


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self._path)


def connections_seen_on_the_host(name: str) -> list[int]:
    """Each kernel's websocket count, asked on the host itself (the server's own socket,
    not the tunnel) and without counting as activity (`no_track_activity`)."""
    state = STATE / name
    endpoint = (state / "endpoint").read_text().strip()
    assert endpoint.startswith("unix:"), endpoint
    connection = _UnixHTTPConnection(endpoint.removeprefix("unix:"))
    try:
        connection.request("GET", "/api/kernels?no_track_activity=1", headers={
            "Authorization": f"token {(state / 'token').read_text().strip()}"})
        response = connection.getresponse()
        assert response.status == 200, response.status
        return [kernel["connections"] for kernel in json.loads(response.read())]
    finally:
        connection.close()


def test_a_tab_behind_a_dead_tunnel_does_not_keep_its_kernel_past_the_idle_timeout(
        sshd: Sshd, tmp_path: Path) -> None:
    with Relay.start(sshd.port) as relay:
        # Short keep-alives: labhop notices the dead connection and reconnects in seconds.
        config = write_flaky_config(sshd, relay, directory=tmp_path, options={
            "ServerAliveInterval": "1", "ServerAliveCountMax": "3"})
        with LabhopProcess.start("-F", str(config), "gpubox-flaky", "--name", "proj",
                                 "--no-browser", "--idle-timeout", f"{IDLE_TIMEOUT_S}s") as run:
            url = run.wait_for(URL, timeout=90)
            base = f"http://127.0.0.1:{url['port']}"
            _, kernel = jupyter_api.execute(base, url["token"], "x = 41")
            # The browser tab: a kernel websocket through the tunnel, left open.
            tab = websocket.create_connection(
                f"ws://127.0.0.1:{url['port']}/api/kernels/{kernel}/channels"
                f"?token={url['token']}", timeout=10)
            try:
                assert connections_seen_on_the_host("proj") == [1]

                # The laptop moves to another network: no FIN ever reaches the host, whose
                # sshd keeps the tab's end of the socket open.
                relay.cut()
                cut = time.monotonic()
                run.wait_for(r"reconnected; .* works again", timeout=60)
                while (connections_seen_on_the_host("proj") != [0]
                       and time.monotonic() - cut < IDLE_TIMEOUT_S):
                    time.sleep(1)
                dropped = time.monotonic() - cut
                assert connections_seen_on_the_host("proj") == [0], (
                    f"the dead tab still counts as connected {dropped:.0f} s after the cut")
                print(f"dead websocket dropped by Jupyter {dropped:.1f} s after the cut")

                # Nothing else is connected, so the idle kernel is culled on time (a
                # connected one never is: cull_connected is off). That a server without
                # kernels then stops itself at --idle-timeout is test_servers_e2e's.
                while (connections_seen_on_the_host("proj") != []
                       and time.monotonic() - cut < 3 * IDLE_TIMEOUT_S):
                    time.sleep(2)
                culled = time.monotonic() - cut
                assert connections_seen_on_the_host("proj") == [], (
                    f"the kernel behind the dead tab still runs {culled:.0f} s after the cut")
                print(f"idle kernel culled {culled:.0f} s after the cut "
                      f"(--idle-timeout {IDLE_TIMEOUT_S}s)")
                run.interrupt()
                assert run.wait(30) == 0, run.output
            finally:
                tab.close()
    assert wait_until_no_user_processes(30) == []

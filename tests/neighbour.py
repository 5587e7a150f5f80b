"""The neighbour of the security tests: another unprivileged user of the same machines
(`lhneighbour`, made by scripts/testbed-setup) who squats ports and keeps what arrives.

The squatter runs as that user with Debian's python and prints one JSON line per request
it receives (method, path, headers), answering each with 200 and an empty JSON list, as a
server would that a polling JupyterLab tab keeps talking to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

NEIGHBOUR = "lhneighbour"

# port N: bind 127.0.0.1:N as soon as it is free, then serve. race: watch every command
# line on the machine for a port a server is about to take (`port=N`, as labhop passed it
# once) and take it first. Only the victim's (uid argv[2]): the suite's other worker runs
# servers of its own user beside this one.
SQUATTER = r"""
import json, os, re, socket, sys, threading, time
mode = sys.argv[1]
said = threading.Lock()

def say(event):
    # One line per event even when many connections answer at once.
    with said:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

def serve(sock):
    say({"bound": sock.getsockname()[1]})
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()

def handle(conn):
    data = b""
    try:
        while True:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            length = int(headers.get("Content-Length", "0") or 0)
            while len(data) < length:
                data += conn.recv(65536)
            data = data[length:]
            say({"method": method, "path": path, "headers": headers})
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 2\r\n\r\n[]")
    except OSError:
        return
    finally:
        conn.close()

def bind(port):
    sock = socket.socket()
    # As any server would: a port the tab's closed connections left in TIME_WAIT binds.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock

if mode == "port":
    while True:
        try:
            sock = bind(int(sys.argv[2]))
            break
        except OSError:
            time.sleep(0.005)
    serve(sock)
else:
    seen = set()
    victim = sys.argv[2]
    while True:
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/status") as f:
                    uid = next(l.split()[1] for l in f if l.startswith("Uid:"))
                if uid != victim:
                    continue
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    line = f.read().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, StopIteration):
                continue
            for port in re.findall(r"port=(\d+)", line):
                if port != "0" and port not in seen:
                    seen.add(port)
                    say({"saw": line})
                    try:
                        threading.Thread(target=serve, args=(bind(int(port)),),
                                         daemon=True).start()
                    except OSError:
                        pass
        time.sleep(0.002)
"""


@dataclass
class Squatter:
    """A running squatter and what it has received so far."""

    process: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, *args: str) -> Squatter:
        process = subprocess.Popen(
            ["runuser", "-u", NEIGHBOUR, "--", "/usr/bin/python3", "-u", "-c", SQUATTER, *args],
            stdout=subprocess.PIPE, text=True, cwd="/", start_new_session=True)
        squatter = cls(process)
        threading.Thread(target=squatter._read, daemon=True).start()
        return squatter

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                # Kept where the test can see it: a lost event must never read as no event.
                self.events.append({"garbled": line})

    @property
    def requests(self) -> list[dict[str, Any]]:
        return [event for event in self.events if "method" in event]

    def wait_bound(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if "bound" in event:
                    return int(event["bound"])
            time.sleep(0.02)
        raise AssertionError("the squatter never got the port")

    def wait_requests(self, count: int, timeout: float,
                      where: Callable[[dict[str, Any]], object] = bool) -> list[dict[str, Any]]:
        """Every request so far, once `count` of them satisfy `where` (or at the timeout)."""
        deadline = time.monotonic() + timeout
        while (time.monotonic() < deadline
               and sum(1 for request in self.requests if where(request)) < count):
            time.sleep(0.1)
        assert not [event for event in self.events if "garbled" in event], self.events
        return self.requests

    def stop(self) -> None:
        # runuser's session: the squatter is in it; signalled by the group we started.
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=10)

    def __enter__(self) -> Squatter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def credentials(request: dict[str, Any]) -> bool:
    """Whether a captured request carries something that could open a server."""
    headers = {key.lower(): value for key, value in request["headers"].items()}
    return ("authorization" in headers or "token=" in request["path"]
            or "username-" in headers.get("cookie", ""))

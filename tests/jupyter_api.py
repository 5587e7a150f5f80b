"""Talk to a Jupyter server the way a browser does: REST with a token, kernels over websocket.

Only urllib and websocket-client, so the tests check the server labhop started with nothing
from Jupyter's own client libraries.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from typing import Any

import websocket

# Never route loopback test traffic through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class KernelError(Exception):
    """Code run in the kernel raised; the message carries the kernel's traceback."""

    def __init__(self, ename: str, evalue: str, traceback: list[str]) -> None:
        self.ename = ename
        self.evalue = evalue
        self.traceback = "\n".join(_ANSI_ESCAPE.sub("", line) for line in traceback)
        super().__init__(f"{ename}: {evalue}\n{self.traceback}")


def _request(
    method: str, base_url: str, path: str, token: str, *, timeout: float, body: bytes | None = None
) -> bytes:
    url = f"{base_url.rstrip('/')}{path}"
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    request = urllib.request.Request(  # noqa: S310 -- scheme checked just above
        url, data=body, method=method, headers={"Authorization": f"token {token}"}
    )
    with _OPENER.open(request, timeout=timeout) as response:
        return response.read()


def api_status(base_url: str, token: str, timeout: float = 10) -> dict[str, Any]:
    """GET /api/status: raises urllib.error.HTTPError (e.g. 403 for a bad token) or URLError."""
    return json.loads(_request("GET", base_url, "/api/status", token, timeout=timeout))


def start_kernel(base_url: str, token: str, timeout: float = 60) -> str:
    """Start a kernel of the server's default kind; returns its id."""
    reply = _request("POST", base_url, "/api/kernels", token, timeout=timeout, body=b"{}")
    return json.loads(reply)["id"]


def list_kernels(base_url: str, token: str, timeout: float = 10) -> list[dict[str, Any]]:
    """`GET /api/kernels`: the server's running kernels."""
    kernels = json.loads(_request("GET", base_url, "/api/kernels", token, timeout=timeout))
    assert isinstance(kernels, list)
    return kernels


def shutdown_kernel(base_url: str, token: str, kernel_id: str, timeout: float = 30) -> None:
    _request("DELETE", base_url, f"/api/kernels/{kernel_id}", token, timeout=timeout)


def execute(
    base_url: str, token: str, code: str, kernel_id: str | None = None, timeout: float = 60
) -> tuple[str, str]:
    """Run `code` in a kernel (a new one unless `kernel_id`); returns (output, kernel_id).

    The output is what a console would show: stdout stream text, then the text/plain of
    the result followed by a newline. Raises KernelError if the code raised.
    """
    deadline = time.monotonic() + timeout
    if kernel_id is None:
        kernel_id = start_kernel(base_url, token, timeout)
    ws_url = re.sub(r"^http", "ws", base_url.rstrip("/"))
    session = uuid.uuid4().hex
    connection = websocket.create_connection(
        f"{ws_url}/api/kernels/{kernel_id}/channels?session_id={session}",
        header=[f"Authorization: token {token}"],
        timeout=max(deadline - time.monotonic(), 1),
    )
    try:
        msg_id = uuid.uuid4().hex
        connection.send(json.dumps(_execute_request(code, msg_id, session)))
        return _collect_output(connection, msg_id, deadline), kernel_id
    finally:
        connection.close()


def _execute_request(code: str, msg_id: str, session: str) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "session": session,
            "username": "labhop-tests",
            "date": datetime.now(timezone.utc).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }


def _collect_output(connection: websocket.WebSocket, msg_id: str, deadline: float) -> str:
    """Read replies to `msg_id` until the kernel reports idle for it."""
    output: list[str] = []
    while True:
        frame = _receive(connection, deadline)
        if frame is None:
            raise TimeoutError(f"kernel did not finish; output so far: {''.join(output)!r}")
        # Binary frames carry buffers (widgets and the like), never the text we collect.
        if not isinstance(frame, str):
            continue
        message = json.loads(frame)
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        msg_type, content = message["header"]["msg_type"], message["content"]
        if msg_type == "stream" and content.get("name") == "stdout":
            output.append(content["text"])
        elif msg_type == "execute_result":
            output.append(content["data"].get("text/plain", "") + "\n")
        elif msg_type == "error":
            raise KernelError(content["ename"], content["evalue"], content["traceback"])
        elif msg_type == "status" and content.get("execution_state") == "idle":
            return "".join(output)


def _receive(connection: websocket.WebSocket, deadline: float) -> str | bytes | None:
    """The next frame, or None once the deadline has passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    connection.settimeout(remaining)
    try:
        return connection.recv()
    except websocket.WebSocketTimeoutException:
        return None

"""Talks HTTP to a Jupyter server through the local end of the tunnel.

`http.client` directly, not urllib: a user's http_proxy must never see 127.0.0.1
traffic, and the token goes in a header, never in a URL that could be logged.

"""

from __future__ import annotations

import http.client

from labhop import debuglog

_LOGGER = debuglog.get(__name__)


def _request(port: int, token: str, method: str, path: str, timeout: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers={"Authorization": f"token {token}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def probe(port: int, token: str, timeout: float = 5.0) -> str:
    """One readiness check: "ok", "closed" (the tunnel accepted, then hung up at once:
    ssh could not open its channel), or "no" (anything else: refused, timeout, HTTP error)."""
    try:
        code, _ = _request(port, token, "GET", "/api/status", timeout)
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
        _LOGGER.debug("probe 127.0.0.1:%s: %s", port, exc)
        return "closed"
    except (OSError, http.client.HTTPException) as exc:
        _LOGGER.debug("probe 127.0.0.1:%s: %s", port, exc)
        return "no"
    return "ok" if code == 200 else "no"


from __future__ import annotations

import sys
from importlib.metadata import version


def v(name):
    try:
        return tuple(int(x) for x in version(name).split(".")[:2])
    except Exception:
        return None
app, want = sys.argv[1], sys.argv[2]
nb, js = v("notebook"), v("jupyter_server")
prefix = "NotebookApp" if app == "notebook" and nb is not None and nb < (7, 0) else "ServerApp"
sock_ok = (nb is None or nb >= (6, 1)) if prefix == "NotebookApp" else (js is None or js >= (1, 9))
transport = want if sock_ok else "tcp"
# ServerApp.websocket_ping_interval/_timeout came with jupyter_server 2.13 (#1391); an
# older server would only warn about them, so they are left out there.
ws_ping = int(prefix == "ServerApp" and js is not None and js >= (2, 13))
# jupyter_server 2.0 brought the IdentityProvider that labhop's private config file
# (server_config.py) extends with per-session browser tokens.
idp = int(prefix == "ServerApp" and js is not None and js >= (2, 0))
print(prefix, transport, ws_ping, idp)

from __future__ import annotations

import os
import select
import socket
import sys
import time

if sys.argv[1] == "versions":
    try:
        from importlib.metadata import version
    except ImportError:
        sys.exit(0)
    for name in ("jupyter_server", "jupyterlab", "notebook"):
        try:
            print(name, version(name))
        except Exception:
            print(name)
    sys.exit(0)
path, deadline = sys.argv[2], time.monotonic() + float(sys.argv[3])
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(4)
    print("labhop:listening=1", flush=True)
    while time.monotonic() < deadline:
        ready, _, _ = select.select([server, sys.stdin], [], [], 1.0)
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 4096):
            break
        if server in ready:
            conn, _ = server.accept()
            conn.settimeout(5)
            try:
                data = b""
                while not data.endswith(b"\n") and len(data) < 256:
                    chunk = conn.recv(256)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(b"pong " + data)
            except OSError:
                pass
            finally:
                conn.close()
finally:
    server.close()
    if os.path.exists(path):
        os.unlink(path)

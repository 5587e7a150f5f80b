"""A pausable, cuttable TCP relay on loopback: a flaky network between laptop and test sshd.

`Relay.start(sshd.port)` listens on a free 127.0.0.1 port and pipes every connection to the
sshd. `pause()` cuts the network the way a pulled cable or a sleeping laptop does: nothing
moves in either direction and nothing is closed, so ssh can only notice through its
ServerAlive keep-alives (or, for a new connection, its ConnectTimeout). `resume()` is the
cable plugged back in / the laptop waking up.

What pause holds, and why: each direction's pump keeps the bytes it has read (at most one
chunk; the rest stays in the kernel's socket buffers) and also keeps any EOF or reset it saw,
delivering all of it only after `resume()`. So a connection that both ends still hold simply
carries on after a short pause, as a TCP connection does when a laptop wakes up. An ssh that
gave up during the pause (ServerAliveInterval * ServerAliveCountMax) has closed its socket;
its FIN is held too and reaches sshd on `resume()`, which then ends that session, much as a
real server learns of the dead peer on its first retransmission after the network returns.
A connection accepted while paused is not even forwarded to the target until `resume()`, so
the connecting ssh sees no banner and hangs until its ConnectTimeout.

`cut()` is the laptop moving to another network (a new Wi-Fi, a VPN reconnect, a new address):
every connection open at that moment is abandoned for good. Not one more byte, EOF or reset
crosses in either direction, ever, and nothing is closed until the relay itself is closed
(close() then tears them down as any other). The relay stops reading them (at most one chunk
already read is dropped), so a side that keeps writing blocks once the kernel's buffers
fill, as on a path that no longer answers. So sshd never learns that the old
connection is dead (its session and the commands in it live on, as on a real server that
never hears from the vanished address again), and the local ssh can only notice through its
ServerAlive keep-alives. Connections accepted after the cut work normally, as connections
from the new network do (unless the relay is paused). A connection the kernel has completed
but the accept loop has not picked up yet (at most ~0.1 s old) counts as a new one.

`write_flaky_config` writes an ssh_config with a host alias that goes through the relay.
"""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from tests.testbed import Sshd

_CHUNK = 256 * 1024
# How often the accept loop looks at the closed flag; only bounds how long close() waits.
_ACCEPT_POLL_SECONDS = 0.1
# How long a pump waits for room in a full send buffer before re-checking pause/close.
_SEND_POLL_SECONDS = 0.05
_JOIN_SECONDS = 5.0
_config_counter = itertools.count()


class _Gate:
    """Open while the network works, shut while paused; closing the relay opens it for good.

    Every byte a pump sends is sent while holding the gate's lock, with non-blocking sends,
    so once `shut()` returns not one more byte leaves the relay until `open()`. The same
    lock guards each connection's `abandoned` flag (set by Relay.cut), so once a connection
    is abandoned not one more byte of it leaves the relay at all.
    """

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.paused = False
        self.closed = False

    def shut(self) -> None:
        with self.lock:
            self.paused = True

    def open(self) -> None:
        with self.lock:
            self.paused = False
            self.lock.notify_all()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify_all()

    def wait_open(self, abandoned: Callable[[], bool] = lambda: False) -> bool:
        """Block while paused (or, for an abandoned connection, for good); False once the
        relay is closed (the caller must stop)."""
        with self.lock:
            self.lock.wait_for(lambda: self.closed or not (self.paused or abandoned()))
            return not self.closed


class _Connection:
    """One relayed connection: a client socket, its upstream socket, and two pumps."""

    def __init__(self, client: socket.socket, gate: _Gate) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self._gate = gate
        self._lock = threading.Lock()
        self._pumps_left = 2
        self.threads: list[threading.Thread] = []
        # Set by Relay.cut under the gate's lock; never cleared.
        self.abandoned = False

    def _is_abandoned(self) -> bool:
        return self.abandoned

    def _wait_open(self) -> bool:
        """Wait until this connection may pass traffic; False once the relay is closed.

        An abandoned connection never may again, so it waits here until the relay closes.
        """
        return self._gate.wait_open(self._is_abandoned)

    def run(self, target: tuple[str, int]) -> None:
        """Connect upstream once the network is up, then pump both ways on two threads."""
        if not self._wait_open():
            self.close()
            return
        try:
            self.upstream = socket.create_connection(target)
        except OSError:
            # The target is down: the client sees the connection close, like a refused port
            # behind a NAT would look to it.
            self.close()
            return
        for sock in (self.client, self.upstream):
            # SSH is interactive: keep-alive probes and keystrokes must not wait for Nagle.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for src, dst in ((self.client, self.upstream), (self.upstream, self.client)):
            thread = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                try:
                    data = src.recv(_CHUNK)
                except OSError:
                    # A reset (or close() tearing the sockets down): held like data while
                    # paused, then passed on by closing both ends.
                    if not self._pass_on(self._abort):
                        self._abort()
                    return
                if not data:
                    self._forward_eof(dst)
                    return
                if not self._send_all(dst, data):
                    self._abort()
                    return
        finally:
            self._pump_done()

    def _send_all(self, dst: socket.socket, data: bytes) -> bool:
        """Send `data` only while the gate is open; False if the relay or `dst` went away."""
        view = memoryview(data)
        while view:
            if not self._wait_open():
                return False
            with self._gate.lock:
                # Checked again under the lock: pause() or cut() may have won the race since.
                if self._gate.paused or self.abandoned:
                    continue
                try:
                    sent = dst.send(view, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    return False
            view = view[sent:]
            if not sent:
                # Buffer full: wait for room outside the lock, so pause() is never delayed.
                with contextlib.suppress(OSError, ValueError):
                    select.select([], [dst], [], _SEND_POLL_SECONDS)
        return True

    def _forward_eof(self, dst: socket.socket) -> None:
        # A half-close is passed on as a half-close, so `ssh host cat <file` style traffic
        # still gets its answer back.
        def half_close() -> None:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        self._pass_on(half_close)

    def _pass_on(self, deliver: Callable[[], None]) -> bool:
        """Run `deliver` (an EOF or reset for a peer) under the gate's lock, once this
        connection may pass traffic; False, without running it, if the relay closed first."""
        while self._wait_open():
            with self._gate.lock:
                # Checked again under the lock: pause() or cut() may have won the race since.
                if not (self._gate.paused or self.abandoned):
                    deliver()
                    return True
        return False

    def _abort(self) -> None:
        for sock in (self.client, self.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _pump_done(self) -> None:
        with self._lock:
            self._pumps_left -= 1
            last = self._pumps_left == 0
        if last:
            self.close()

    def close(self) -> None:
        """Tear both sockets down; shutdown first wakes up pumps blocked in recv()."""
        self._abort()
        for sock in (self.client, self.upstream):
            if sock is not None:
                sock.close()


class Relay:
    """A TCP relay from 127.0.0.1:`port` to 127.0.0.1:`target_port` that can be paused.

    See the module docstring for exactly what pause and resume do to connections.
    """

    def __init__(self, listener: socket.socket, target_port: int) -> None:
        self._listener = listener
        self.port: int = listener.getsockname()[1]
        self.target_port = target_port
        self._gate = _Gate()
        self._connections: list[_Connection] = []
        self._handlers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)

    @classmethod
    def start(cls, target_port: int) -> Relay:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(_ACCEPT_POLL_SECONDS)
        relay = cls(listener, target_port)
        relay._accept_thread.start()
        return relay

    @property
    def paused(self) -> bool:
        return self._gate.paused

    def pause(self) -> None:
        """Cut the network: from now on no byte, EOF or reset crosses until resume()."""
        self._gate.shut()

    def resume(self) -> None:
        """Restore the network: held bytes are delivered and traffic flows again."""
        self._gate.open()

    def cut(self) -> int:
        """Move to another network: abandon every connection open now, for good.

        From now on nothing of those connections crosses (no byte, EOF or reset, in either
        direction) and they stay open at both ends until close(). Later connections are not
        affected. Returns how many connections were abandoned.
        """
        with self._lock, self._gate.lock:
            live = [c for c in self._connections if c.client.fileno() != -1]
            for connection in live:
                connection.abandoned = True
        return len(live)

    def close(self) -> None:
        """Stop accepting and close every relayed connection (both ends see it close)."""
        self._gate.close()
        self._listener.close()
        self._accept_thread.join(_JOIN_SECONDS)
        with self._lock:
            connections, handlers = list(self._connections), list(self._handlers)
        for connection in connections:
            connection.close()
        for thread in handlers + [t for c in connections for t in c.threads]:
            thread.join(_JOIN_SECONDS)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        # The kernel completes the TCP handshake for us even while paused, which is fine: a
        # client behind a dead link that got a SYN-ACK still waits forever for the banner.
        while not self._gate.closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed
            client.settimeout(None)
            connection = _Connection(client, self._gate)
            handler = threading.Thread(
                target=connection.run, args=(("127.0.0.1", self.target_port),), daemon=True
            )
            with self._lock:
                self._connections = [c for c in self._connections if c.client.fileno() != -1]
                self._connections.append(connection)
                self._handlers = [t for t in self._handlers if t.is_alive()]
                self._handlers.append(handler)
            handler.start()


def write_flaky_config(
    sshd: Sshd,
    relay: Relay,
    alias: str = "gpubox-flaky",
    *,
    directory: Path | None = None,
    options: Mapping[str, str] | None = None,
) -> Path:
    """Write sshd.config plus a Host `alias` that reaches the sshd through `relay`.

    The new block copies the settings of the sshd's main alias (User, IdentityFile,
    UserKnownHostsFile, StrictHostKeyChecking, BatchMode, ...) with the relay's port, and
    adds `HostKeyAlias [127.0.0.1]:<sshd port>` so the existing known_hosts entry still
    matches. `options` add or replace settings in the block (e.g. ServerAliveInterval).
    The file goes to `directory`, or next to sshd.config under a name no other call uses.
    """
    base = sshd.config.read_text()
    settings = _host_settings(base, sshd.alias())
    settings["Port"] = str(relay.port)
    settings["HostKeyAlias"] = f"[127.0.0.1]:{sshd.port}"
    for key, value in (options or {}).items():
        _set_option(settings, key, value)
    block = f"Host {alias}\n" + "".join(f"    {k} {v}\n" for k, v in settings.items())
    folder = directory or sshd.workdir
    path = folder / f"ssh_config-{alias}-{relay.port}-{next(_config_counter)}"
    path.write_text(f"{base.rstrip()}\n\n{block}")
    return path


def _host_settings(config: str, alias: str) -> dict[str, str]:
    """The `Keyword value` lines of the `Host alias` block in a config written by testbed."""
    settings: dict[str, str] = {}
    in_block = False
    for line in config.splitlines():
        words = line.split(None, 1)
        if not words:
            continue
        if words[0].lower() == "host":
            if in_block:
                break
            in_block = len(words) == 2 and words[1].strip() == alias
        elif in_block and len(words) == 2:
            settings[words[0]] = words[1].strip()
    if not settings:
        raise ValueError(f"no `Host {alias}` block in the sshd's client config")
    return settings


def _set_option(settings: dict[str, str], key: str, value: str) -> None:
    # ssh keywords are case-insensitive: replace an existing spelling rather than add a
    # second line that ssh would ignore (it keeps the first value it reads).
    for existing in list(settings):
        if existing.lower() == key.lower():
            del settings[existing]
    settings[key] = value

"""A TCP relay on loopback that delays every byte by a fixed time: a far host.

This kernel has no netem qdisc, so latency is made here, in user space: each direction
reads what arrives and sends it on `one_way_s` later, in order, with no bandwidth limit.
`DelayRelay.start(target_port, rtt_s=0.1)` gives a host 100 ms away. It has a `port`, as
tests.relay.Relay does, so `tests.relay.write_flaky_config` can name it in an ssh_config.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

_CHUNK = 256 * 1024


class DelayRelay:
    def __init__(self, target_port: int, one_way_s: float) -> None:
        self.target_port = target_port
        self.one_way_s = one_way_s
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @classmethod
    def start(cls, target_port: int, *, rtt_s: float = 0.1) -> DelayRelay:
        relay = cls(target_port, rtt_s / 2)
        relay._thread.start()
        if not relay._ready.wait(10):
            raise RuntimeError("the delay relay did not start")
        return relay

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._listen())
        self._ready.set()
        self._loop.run_forever()

    async def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, sock=listener)

    async def _handle(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read as it comes; deliver each chunk `one_way_s` after it arrived, in order."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(_CHUNK)
                await queue.put((time.monotonic() + self.one_way_s, data))
                if not data:
                    break
            await sender
        except (OSError, asyncio.CancelledError):
            sender.cancel()
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    def close(self) -> None:
        def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.stop()

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(5)

    def __enter__(self) -> DelayRelay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

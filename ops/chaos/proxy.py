"""A TCP fault proxy: pass traffic through, refuse it for a while, or delay it.

``FaultProxy(target_host, target_port)`` listens on a port of its own and relays every
connection to the target. Its mode changes while it runs:

- ``passthrough()``: bytes go through as they come;
- ``refuse()``: every open connection is cut (reset) and the listener closes, so new
  connections are refused (``ECONNREFUSED``) until ``passthrough()`` opens it again on the same
  port;
- ``delay(seconds)``: every chunk of bytes, in either direction, reaches the other side
  ``seconds`` after it arrived (added latency: a round trip costs two of them; throughput is
  not throttled).

It runs on the caller's event loop (``ops.chaos`` runs it in a thread of its own with
``ProxyThread`` so that the blocking parts of the suite do not stall it).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["FaultProxy", "ProxyThread"]

CHUNK = 65536
T = TypeVar("T")


class FaultProxy:
    """A relay to ``target_host:target_port`` on ``host:port`` (``port=0``: a free one, read
    ``port`` after ``start``) with a mode of its own (see the module)."""

    def __init__(
        self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port
        self.latency = 0.0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def refusing(self) -> bool:
        """Whether the listener is closed (``refuse``)."""
        return self._server is None

    async def start(self) -> None:
        """Listen (in pass-through mode)."""
        await self._listen()

    async def stop(self) -> None:
        """Close the listener and every connection."""
        await self._close()

    async def passthrough(self) -> None:
        """Relay bytes as they come; listen again if refusing."""
        self.latency = 0.0
        if self._server is None:
            await self._listen()

    async def delay(self, seconds: float) -> None:
        """Deliver every chunk ``seconds`` late, in both directions (connections stay up)."""
        self.latency = seconds
        if self._server is None:
            await self._listen()

    async def refuse(self) -> None:
        """Reset every connection and stop listening: connecting is refused."""
        await self._close()

    async def _listen(self) -> None:
        # The port was ours a moment ago; another process may grab it while we refuse, in which
        # case listening again fails loudly (OSError) rather than relaying someone else's port.
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            _reset(writer)
        # Reset, each relay's reads fail and it ends by itself; one that does not is cancelled.
        if self._links:
            _, stuck = await asyncio.wait(list(self._links), timeout=5)
            for task in stuck:
                task.cancel()
        if server is not None:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection(*self.target)
            self._writers.add(upstream)
            # A side failing (a reset) ends the other too.
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pipe(reader, upstream))
                group.create_task(self._pipe(up_reader, writer))
        except* OSError:
            pass
        finally:
            self._links.discard(task)
            for side in (writer, upstream):
                if side is not None:
                    self._writers.discard(side)
                    side.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy ``reader`` to ``writer``; each chunk waits out the latency in force when it
        arrived (queued, so a slow chunk does not hold back the reading of the next)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                queue.put_nowait((time.monotonic() + self.latency, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP reset (SO_LINGER 0), as a crashed server would."""
    sock: socket.socket | None = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ProxyThread:
    """Fault proxies on an event loop in a thread of their own, driven from any thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fault-proxy")
        self._thread.daemon = True
        self._thread.start()

    def call(self, action: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
        """Run ``action()`` (a coroutine function) on the proxies' loop; its result."""

        async def run() -> T:
            return await action()

        future: Future[T] = asyncio.run_coroutine_threadsafe(run(), self.loop)
        return future.result(timeout)

    def proxy(self, target_host: str, target_port: int, **kwargs: Any) -> FaultProxy:
        """A started ``FaultProxy`` to the target, on this thread's loop."""
        proxy = FaultProxy(target_host, target_port, **kwargs)
        self.call(proxy.start)
        return proxy

    def close(self) -> None:
        """Stop the loop and the thread (stop the proxies first)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

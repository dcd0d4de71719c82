"""Live updates: a ticker that refreshes the view once per push interval, and the SSE endpoint.

Each browser gets, over one ``text/event-stream`` response, a ``state`` event first (the whole
view with every instance's chart history), then a ``tick`` event per interval with the view and
only the chart points added since the previous event it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from aiohttp import web

from web.state import DashboardState

__all__ = ["Hub", "sse_event", "stream_response"]

log = logging.getLogger("web.stream")


def sse_event(event: str, data: Any, *, event_id: int | None = None) -> bytes:
    """One Server-Sent Event (JSON data on a single line)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


class Hub:
    """Wakes every stream once per ``interval``; the view of a tick is computed once."""

    def __init__(self, state: DashboardState, *, interval: float = 1.0) -> None:
        self.state = state
        self.interval = interval
        self.tick = 0
        self.closed = False
        self.clients = 0
        self._wake = asyncio.Event()
        self._view: tuple[int, dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None

    def view(self) -> dict[str, Any]:
        """The view of the current tick."""
        if self._view is None or self._view[0] != self.tick:
            self._view = (self.tick, self.state.view())
        return self._view[1]

    async def start(self) -> None:
        """Start ticking."""
        self.closed = False
        self._task = asyncio.create_task(self._run(), name="dashboard-ticker")

    async def close(self, _app: web.Application | None = None) -> None:
        """Stop ticking and let every stream end (an ``on_shutdown`` hook)."""
        self.closed = True
        self._advance()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _advance(self) -> None:
        self.tick += 1
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)  # the push period
            self.state.prune()
            self._advance()

    async def wait(self, seen: int) -> int:
        """The first tick after ``seen`` (at once if it already happened)."""
        if self.tick == seen and not self.closed:
            await self._wake.wait()
        return self.tick


async def stream_response(request: web.Request, hub: Hub) -> web.StreamResponse:
    """Serve the live stream until the client leaves or the app shuts down."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache, no-transform",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    state = hub.state
    hub.clients += 1
    try:
        cursor = state.cursor()
        tick = hub.tick
        await response.write(b"retry: 2000\n\n")
        await response.write(
            sse_event("state", {"view": hub.view(), "history": state.history()}, event_id=tick)
        )
        while not hub.closed:
            tick = await hub.wait(tick)
            if hub.closed:
                break
            points = state.history(since=cursor)
            cursor = state.cursor()
            await response.write(
                sse_event("tick", {"view": hub.view(), "history": points}, event_id=tick)
            )
    except (ConnectionResetError, ConnectionError):
        log.debug("a dashboard stream client left")
    finally:
        hub.clients -= 1
    return response

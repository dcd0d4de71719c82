"""Live updates: a ticker that refreshes the view once per push interval, and the SSE endpoint.

Each browser gets, over one ``text/event-stream`` response, a ``state`` event first (the whole
view with every instance's chart history), then a ``tick`` event per interval with the view and
only the chart points added since the previous event it received.

Streams are bounded (``StreamLimits``): each lasts at most ``lifetime`` seconds (and no longer
than the caller's token), sends a ``: ping`` comment after ``heartbeat`` seconds of silence (so
that idle proxies keep it and a dead peer is found), and the ``Hub`` admits at most
``per_client`` streams per client and ``total`` in all, of which ``reserved`` only for
callers with ``metrics:read`` (anyone may register an account: a mere token is not enough to
reach the reserve); a refused stream is a 429 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from core.errors import ProblemError, TooManyRequests
from web.state import DashboardState

__all__ = ["Hub", "StreamLimits", "Viewer", "sse_event", "stream_response"]

log = logging.getLogger("web.stream")

HEARTBEAT = b": ping\n\n"

Recheck = Callable[[], Awaitable[None]]


def sse_event(event: str, data: Any, *, event_id: int | None = None) -> bytes:
    """One Server-Sent Event (JSON data on a single line)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """How long streams last and how many are admitted (from the web settings)."""

    lifetime: float = 900.0
    heartbeat: float = 15.0
    per_client: int = 4
    total: int = 200
    reserved: int = 20
    retry_after: int = 5


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who reads: a client key (``user:<id>`` or ``ip:<address>``), whether they authenticated,
    whether they see the full view, and when their token expires (epoch seconds)."""

    client: str
    authenticated: bool = False
    full: bool = False
    expires_at: float | None = None


class Hub:
    """Wakes every stream once per ``interval``; the views of a tick are computed once."""

    def __init__(
        self,
        state: DashboardState,
        *,
        interval: float = 1.0,
        limits: StreamLimits | None = None,
    ) -> None:
        self.state = state
        self.interval = interval
        self.limits = limits or StreamLimits()
        self.tick = 0
        self.closed = False
        self.clients = 0
        self.unprivileged = 0  # streams of callers without the full view
        self._per_client: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._views: dict[bool, tuple[int, dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None

    def view(self, *, full: bool = False) -> dict[str, Any]:
        """The view of the current tick (the public one with ``full=False``)."""
        cached = self._views.get(full)
        if cached is None or cached[0] != self.tick:
            cached = self._views[full] = (self.tick, self.state.view(full=full))
        return cached[1]

    @contextlib.contextmanager
    def admit(self, viewer: Viewer) -> Iterator[None]:
        """Hold a stream slot for ``viewer`` or raise ``TooManyRequests`` (429)."""
        limits = self.limits
        refusal = None
        if self._per_client.get(viewer.client, 0) >= limits.per_client:
            refusal = "Too many dashboard streams are open for this client"
        elif self.clients >= limits.total or (
            not viewer.full and self.unprivileged >= limits.total - limits.reserved
        ):
            refusal = "Too many dashboard streams are open; retry shortly"
        if refusal is not None:
            raise TooManyRequests(refusal, headers={"Retry-After": str(limits.retry_after)})
        self.clients += 1
        self.unprivileged += not viewer.full
        self._per_client[viewer.client] = self._per_client.get(viewer.client, 0) + 1
        try:
            yield
        finally:
            self.clients -= 1
            self.unprivileged -= not viewer.full
            left = self._per_client[viewer.client] - 1
            if left:
                self._per_client[viewer.client] = left
            else:
                del self._per_client[viewer.client]

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


async def stream_response(
    request: web.Request,
    hub: Hub,
    viewer: Viewer,
    *,
    recheck: Recheck | None = None,
) -> web.StreamResponse:
    """Serve the live stream until the client leaves, its lifetime ends or the app shuts down.

    ``recheck`` runs at every heartbeat and ends the stream when it raises (the caller's token
    was revoked, or it cannot be checked).
    """
    with hub.admit(viewer):  # before anything is sent: a refusal is a whole 429
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache, no-transform",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        try:
            await _follow(response, hub, viewer, recheck)
        except (ConnectionResetError, ConnectionError):
            log.debug("a dashboard stream client left")
    return response


async def _follow(
    response: web.StreamResponse, hub: Hub, viewer: Viewer, recheck: Recheck | None
) -> None:
    loop = asyncio.get_running_loop()
    lifetime = hub.limits.lifetime
    if viewer.expires_at is not None:
        lifetime = min(lifetime, viewer.expires_at - time.time())
    deadline = loop.time() + lifetime
    state = hub.state
    full = viewer.full
    cursor = state.cursor()
    tick = hub.tick
    await response.write(b"retry: 2000\n\n")
    await response.write(
        sse_event(
            "state",
            {"view": hub.view(full=full), "history": state.history(full=full)},
            event_id=tick,
        )
    )
    last_write = last_check = loop.time()
    while not hub.closed:
        now = loop.time()
        if now >= deadline:
            break
        # The token is checked again every heartbeat, on its own clock: ticks keep a stream
        # busy, and must not keep a revoked or demoted token's stream alive.
        if recheck is not None and now >= last_check + hub.limits.heartbeat:
            try:
                await recheck()
            except ProblemError:
                break
            except Exception:  # cannot tell whether the token still holds: fail closed
                log.warning("dashboard stream ended: its token could not be checked again")
                break
            last_check = loop.time()
        wake_at = min(
            deadline, last_write + hub.limits.heartbeat, last_check + hub.limits.heartbeat
        )
        try:
            async with asyncio.timeout(max(0.0, wake_at - loop.time())):
                tick = await hub.wait(tick)
        except TimeoutError:
            if loop.time() >= last_write + hub.limits.heartbeat:
                await response.write(HEARTBEAT)
                last_write = loop.time()
            continue
        if hub.closed:
            break
        points = state.history(since=cursor, full=full)
        cursor = state.cursor()
        await response.write(
            sse_event("tick", {"view": hub.view(full=full), "history": points}, event_id=tick)
        )
        last_write = loop.time()

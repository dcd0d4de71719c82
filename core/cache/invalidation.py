"""Invalidations between instances: a Redis pub/sub channel, listened to with a reconnect loop.

A message is ``{"o": origin, "m": [marks]}`` in JSON (``core.cache.keys`` defines marks). Each
instance drops the in-process entries carrying those marks; its own messages are skipped, since it
applied them when it sent them. Anything else published on the channel is ignored.

The subscription is checked by a ``PING`` whenever the channel has been quiet for ``ping``
seconds; no answer within ``ping`` more seconds counts as a lost connection. While the listener is
down, in-process entries are not dropped by messages, so ``Cache`` bounds their lifetime instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from core.cache.keys import KeySpace
from core.cache.redis_tier import RedisTier
from core.retry import Backoff

__all__ = ["InvalidationListener", "InvalidationSender", "decode_message", "encode_message"]

log = logging.getLogger("core.cache")

_MAX_MARKS = 10_000
_MAX_PENDING = 100_000


def encode_message(origin: str, marks: Iterable[str]) -> bytes:
    """The message announcing that ``marks`` were invalidated by instance ``origin``."""
    return orjson.dumps({"o": origin, "m": list(marks)})


def decode_message(data: object) -> tuple[str, list[str]] | None:
    """``(origin, marks)`` of a message, or ``None`` if ``data`` is not one."""
    if not isinstance(data, bytes | str):
        return None
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict):
        return None
    origin, marks = message.get("o"), message.get("m")
    if not isinstance(origin, str) or not isinstance(marks, list) or len(marks) > _MAX_MARKS:
        return None
    if not all(isinstance(mark, str) for mark in marks):
        return None
    return origin, marks


class InvalidationSender:
    """Records invalidations in Redis: bumps the version counter of each mark (kept ``keep``
    seconds, longer than any record lives) and publishes them, in one ``MULTI``.

    Marks Redis could not take are kept (``pending``) and sent with the next invalidation or by
    ``flush()``, which the listener calls while it is connected.
    """

    def __init__(self, redis: RedisTier, keyspace: KeySpace, *, origin: str, keep: float) -> None:
        self._redis = redis
        self._keyspace = keyspace
        self._origin = origin
        self._keep = keep
        self.pending: set[str] = set()

    async def send(self, marks: Sequence[str]) -> bool:
        """Send ``marks`` (and any pending ones); ``False`` if Redis could not take them."""
        marks = [*marks, *self.pending]
        if await self._publish(marks):
            self.pending.difference_update(marks)
            return True
        self.pending.update(marks)
        if len(self.pending) > _MAX_PENDING:
            log.error("cache: %d unsent invalidations, dropping them", len(self.pending))
            self.pending.clear()
        else:
            log.warning("cache: invalidation not sent (Redis unavailable); will retry")
        return False

    async def flush(self) -> None:
        """Send the pending marks, if any."""
        if self.pending:
            marks = list(self.pending)
            if await self._publish(marks):
                self.pending.difference_update(marks)
                log.info("cache: sent %d invalidations held while Redis was away", len(marks))

    async def _publish(self, marks: Sequence[str]) -> bool:
        return await self._redis.invalidate(
            [self._keyspace.version(mark) for mark in marks],
            keep=self._keep,
            channel=self._keyspace.channel,
            message=encode_message(self._origin, marks),
        )


class InvalidationListener:
    """Subscribes to ``channel`` and calls ``on_marks(marks)`` for each message from elsewhere.

    ``on_ready()`` runs after every (re)subscription and whenever the channel has been quiet for
    ``ping`` seconds: the cache sends there the invalidations that could not be sent while Redis
    was away. Reconnects back off with full jitter (``core.retry.Backoff``): the first wait is
    at most ``min_backoff`` seconds, no wait is longer than ``max_backoff``; a subscription
    resets it. ``backoff.failures`` counts the failed attempts since the last subscription.
    """

    def __init__(
        self,
        client: Redis,
        channel: str,
        *,
        origin: str,
        on_marks: Callable[[list[str]], None],
        on_ready: Callable[[], Awaitable[object]] | None = None,
        ping: float = 1.0,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        self._client = client
        self._channel = channel
        self._origin = origin
        self._on_marks = on_marks
        self._on_ready = on_ready
        self._ping = ping
        self._task: asyncio.Task[None] | None = None
        self._listening = False
        self.backoff = Backoff(base=min_backoff, cap=max_backoff)
        self._down_logged = False

    @property
    def listening(self) -> bool:
        """Whether the subscription is established now."""
        return self._listening

    def start(self) -> None:
        """Start listening in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"cache-listener:{self._channel}")

    async def stop(self) -> None:
        """Stop listening and close the subscription."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except Exception as exc:  # any failure: reconnect after a pause
                level = logging.DEBUG if self._down_logged else logging.WARNING
                log.log(level, "cache invalidation listener: no Redis (%s)", type(exc).__name__)
                self._down_logged = True
            await self.backoff.wait()

    async def _listen(self) -> None:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            loop = asyncio.get_running_loop()
            last_seen = loop.time()
            pinged = False
            while True:
                message = await pubsub.get_message(timeout=self._ping)
                now = loop.time()
                if message is None:
                    if self._listening and self._on_ready is not None:
                        await self._on_ready()
                    if now - last_seen < self._ping:
                        continue
                    if pinged:
                        raise ConnectionError("no answer to PING on the subscription")
                    await pubsub.ping()
                    pinged = True
                    continue
                last_seen, pinged = now, False
                await self._handle(message)
        finally:
            self._listening = False
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            self._listening = True
            self.backoff.reset()
            self._down_logged = False
            log.info("cache invalidation listener subscribed to %s", self._channel)
            if self._on_ready is not None:
                await self._on_ready()
        elif kind == "message":
            decoded = decode_message(message.get("data"))
            if decoded is not None and decoded[0] != self._origin:
                self._on_marks(decoded[1])

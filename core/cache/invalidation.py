"""Invalidations between instances: the channel protocol, unsent marks, and Redis pub/sub.

Whatever the channel, an invalidation of marks (``core.cache.keys`` defines them) bumps each
mark's version counter in Redis (what keeps the shared tiers and late readers right) and tells
the other instances of the namespace, which drop the in-process entries carrying those marks;
an instance skips its own messages, since it applied them when it sent them. Two channels keep
the ``InvalidationChannel`` protocol:

- ``RedisChannel`` (here): the counters and a pub/sub message in one ``MULTI``, and a listener of
  the namespace's channel with a reconnect loop; for a cache used without a bus;
- ``core.cache.broadcast.BusChannel``: the counters, then a broadcast on the app's bus.

Marks a channel could not send are kept (``InvalidationSender.pending``) and sent again. A
message may still be lost while an instance is not listening, so ``Cache`` bounds how long an
in-process entry is served instead (``l1_ttl``).

A Redis message is ``{"o": origin, "m": [marks]}`` in JSON; anything else published on the
channel is ignored. The subscription is checked by a ``PING`` whenever the channel has been
quiet for ``ping`` seconds; no answer within ``ping`` more seconds counts as a lost connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis

from core.cache.keys import KeySpace
from core.cache.redis_tier import RedisTier
from core.retry import Backoff

__all__ = [
    "MAX_MARKS",
    "InvalidationChannel",
    "InvalidationListener",
    "InvalidationSender",
    "MarksHandler",
    "RedisChannel",
    "decode_message",
    "encode_message",
]

log = logging.getLogger("core.cache")

MAX_MARKS = 10_000  # marks in one message; more are sent in several
_MAX_PENDING = 100_000

MarksHandler = Callable[[list[str]], None]


class InvalidationChannel(Protocol):
    """How one cache's invalidations reach the other instances of its namespace."""

    @property
    def listening(self) -> bool:
        """Whether invalidations from other instances are being received now."""
        ...

    @property
    def unsent(self) -> int:
        """Marks waiting to be sent again (their Redis, or their broker, was away)."""
        ...

    async def start(self, on_marks: MarksHandler) -> None:
        """Start listening: ``on_marks(marks)`` for each invalidation from another instance."""
        ...

    async def send(self, marks: Sequence[str]) -> bool:
        """Invalidate ``marks`` everywhere (and any unsent ones); whether their version counters
        were bumped in Redis. ``False``: they are kept and sent again. Telling the other
        instances may follow later (``BusChannel`` broadcasts in the background)."""
        ...

    async def stop(self) -> None:
        """Stop listening and sending again."""
        ...


class InvalidationSender:
    """Sends marks through ``publish(marks) -> bool`` (at most ``MAX_MARKS`` at a time).

    Marks that could not be sent are kept (``pending``) and sent with the next invalidation or
    by ``flush()``, which the channel calls when it can reach its servers again. Beyond
    ``100_000`` pending marks, they are dropped (logged): ``l1_ttl`` still bounds staleness.
    ``what`` names the servers in log lines.
    """

    def __init__(self, publish: Callable[[Sequence[str]], Awaitable[bool]], *, what: str) -> None:
        self._publish = publish
        self._what = what
        self.pending: set[str] = set()

    async def send(self, marks: Iterable[str]) -> bool:
        """Send ``marks`` (and any pending ones); ``False`` if some could not be sent."""
        if await self._send_all([*dict.fromkeys([*marks, *self.pending])]):
            return True
        if len(self.pending) > _MAX_PENDING:
            log.error("cache: %d unsent invalidations, dropping them", len(self.pending))
            self.pending.clear()
        else:
            log.warning("cache: invalidation not sent (%s unavailable); will retry", self._what)
        return False

    async def flush(self) -> bool:
        """Send the pending marks, if any; whether none is left."""
        if not self.pending:
            return True
        marks = list(self.pending)
        if not await self._send_all(marks):
            return False
        log.info("cache: sent %d invalidations held while %s was away", len(marks), self._what)
        return True

    async def _send_all(self, marks: Sequence[str]) -> bool:
        """Send ``marks`` in messages of at most ``MAX_MARKS``; from the first one that fails,
        the rest is pending."""
        for start in range(0, len(marks), MAX_MARKS):
            chunk = marks[start : start + MAX_MARKS]
            if await self._publish(chunk):
                self.pending.difference_update(chunk)
            else:
                self.pending.update(marks[start:])
                return False
        return True


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
    if not isinstance(origin, str) or not isinstance(marks, list) or len(marks) > MAX_MARKS:
        return None
    if not all(isinstance(mark, str) for mark in marks):
        return None
    return origin, marks


class RedisChannel:
    """Invalidations over Redis alone: each mark's counter is bumped (kept ``keep`` seconds,
    longer than any record lives) and a message published on the namespace's channel, in one
    ``MULTI``; an ``InvalidationListener`` receives the others'. Pending marks are sent again
    whenever the listener is (re)subscribed or its channel has been quiet for ``ping`` seconds.
    """

    def __init__(
        self,
        redis: RedisTier,
        keyspace: KeySpace,
        *,
        origin: str,
        keep: float,
        ping: float = 1.0,
    ) -> None:
        self._redis = redis
        self._keyspace = keyspace
        self._origin = origin
        self._keep = keep
        self._ping = ping
        self._sender = InvalidationSender(self._publish, what="Redis")
        self._listener: InvalidationListener | None = None

    @property
    def listening(self) -> bool:
        """Whether the subscription is established now."""
        return self._listener is not None and self._listener.listening

    @property
    def unsent(self) -> int:
        """Marks waiting for Redis to come back."""
        return len(self._sender.pending)

    async def start(self, on_marks: MarksHandler) -> None:
        """Subscribe in the background (and keep subscribing)."""
        if self._listener is None:
            self._listener = InvalidationListener(
                self._redis.subscriber,
                self._keyspace.channel,
                origin=self._origin,
                on_marks=on_marks,
                on_ready=self._sender.flush,
                ping=self._ping,
            )
            self._listener.start()

    async def send(self, marks: Sequence[str]) -> bool:
        """Bump the counters and publish ``marks`` (and any pending ones)."""
        return await self._sender.send(marks)

    async def stop(self) -> None:
        """Stop the listener."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()

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
        on_marks: MarksHandler,
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
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2

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

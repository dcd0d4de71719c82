"""Invalidations over the bus: Redis counters first, then a broadcast to every instance.

Invalidating marks bumps their version counters in Redis, as over pub/sub (this is what keeps
the Redis and memcached records and every later reader right), then publishes a
``CacheInvalidated`` event through the app's ``Bus``. Each instance has a broadcast subscription
of its own (``Bus.broadcast``: over RabbitMQ an exclusive, auto-deleted, bounded queue,
re-declared after a reconnect) and drops its in-process entries for the marks of other origins
in its namespace.

The event goes through ``Bus`` rather than as plain bytes on the transport: the envelope names
the service and the correlation id of the write that caused the invalidation, the bus counts
it in its metrics and lists it in its AsyncAPI document, and a body that does not validate is
dropped by the bus before it reaches the cache. An invalidation is rare next to the write that
causes it, so the envelope costs nothing that matters.

Marks are sent in two steps, each retried on its own: those whose counters could not be bumped
(Redis away) are bumped again, and those bumped but not broadcast (broker away, or no confirm
within ``publish_timeout``) are broadcast again, by a background task backing off between
``min_backoff`` and ``max_backoff`` seconds until none is left. A mark is broadcast only once
its latest counter bump succeeded, so an instance that re-reads on the message finds the new
version. While the broker is unreachable, an invalidation does not wait for it: the transport
says it is not connected and the marks are kept. In-process entries are never served longer than
``l1_ttl`` anyway (``Cache``), which bounds staleness while the subscription is detached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from core.bus.events import Envelope
from core.cache.events import CacheInvalidated
from core.cache.invalidation import MAX_MARKS, MarksHandler
from core.cache.keys import KeySpace
from core.cache.redis_tier import RedisTier
from core.retry import Backoff

if TYPE_CHECKING:
    from core.bus.bus import Bus
    from core.bus.transport import BroadcastSubscription

__all__ = ["BusChannel"]

log = logging.getLogger("core.cache")

_MAX_PENDING = 100_000


class BusChannel:
    """Invalidations of one cache namespace through ``bus`` (started or at least connected),
    with the version counters in ``redis`` (kept ``keep`` seconds, longer than any record)."""

    def __init__(
        self,
        bus: Bus,
        redis: RedisTier,
        keyspace: KeySpace,
        *,
        origin: str,
        keep: float,
        publish_timeout: float = 1.0,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        self._bus = bus
        self._redis = redis
        self._keyspace = keyspace
        self._origin = origin
        self._keep = keep
        self._publish_timeout = publish_timeout
        self.backoff = Backoff(base=min_backoff, cap=max_backoff)
        self._unbumped: set[str] = set()  # their latest counter bump failed
        self._unannounced: set[str] = set()  # bumped, not broadcast yet
        self._pending = asyncio.Event()
        self._on_marks: MarksHandler | None = None
        self._subscription: BroadcastSubscription | None = None
        self._retrier: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        """Whether the broadcast subscription is attached now."""
        return self._subscription is not None and self._subscription.connected

    @property
    def unsent(self) -> int:
        """Marks whose bump or broadcast is still to be done."""
        return len(self._unbumped | self._unannounced)

    async def start(self, on_marks: MarksHandler) -> None:
        """Subscribe (attaching by itself later if the broker is away) and start resending."""
        if self._subscription is not None:
            return
        self._on_marks = on_marks
        self._bus.declare_publishes(CacheInvalidated)
        self._subscription = await self._bus.broadcast(self._receive)
        self._retrier = asyncio.create_task(
            self._retry_pending(), name=f"cache-invalidations:{self._keyspace.namespace}"
        )

    async def stop(self) -> None:
        """Stop resending and leave the broadcast (its queue goes with it)."""
        retrier, self._retrier = self._retrier, None
        if retrier is not None:
            retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retrier
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.stop()

    async def send(self, marks: Sequence[str]) -> bool:
        """Bump the counters of ``marks`` and broadcast them, with whatever was left unsent;
        ``False`` if something is left (it is sent again in the background)."""
        sent = await self._send(marks)
        if not sent:
            if self.unsent > _MAX_PENDING:
                log.error("cache: %d unsent invalidations, dropping them", self.unsent)
                self._unbumped.clear()
                self._unannounced.clear()
            else:
                log.warning("cache: invalidation not sent (Redis or the bus away); will retry")
                self._pending.set()
        return sent

    async def flush(self) -> bool:
        """Send what was left unsent; whether nothing is left."""
        held = self.unsent
        sent = await self._send(())
        if sent and held:
            log.info("cache: sent %d invalidations held while Redis or the bus was away", held)
        return sent

    async def _send(self, marks: Sequence[str]) -> bool:
        # every new invalidation bumps again: a record may have been stamped since the last one
        if not await self._bump([*dict.fromkeys([*marks, *self._unbumped])]):
            return False
        ready = [mark for mark in self._unannounced if mark not in self._unbumped]
        return await self._announce(ready) and not self._unannounced

    async def _bump(self, marks: list[str]) -> bool:
        for start in range(0, len(marks), MAX_MARKS):
            chunk = marks[start : start + MAX_MARKS]
            keys = [self._keyspace.version(mark) for mark in chunk]
            if not await self._redis.invalidate(keys, keep=self._keep):
                self._unbumped.update(marks[start:])
                return False
            self._unbumped.difference_update(chunk)
            self._unannounced.update(chunk)
        return True

    async def _announce(self, marks: list[str]) -> bool:
        if marks and not self._bus.transport.connected:
            return False  # do not wait for a broker that is away: the retrier will
        for start in range(0, len(marks), MAX_MARKS):
            chunk = marks[start : start + MAX_MARKS]
            event = CacheInvalidated(
                namespace=self._keyspace.namespace, origin=self._origin, marks=tuple(chunk)
            )
            try:
                async with asyncio.timeout(self._publish_timeout):
                    await self._bus.publish(event)
            except Exception as exc:  # PublishError, a timeout: sent again later
                log.debug("cache: invalidation broadcast failed: %r", exc)
                return False
            self._unannounced.difference_update(chunk)
        return True

    async def _receive(self, event: CacheInvalidated, envelope: Envelope) -> None:
        """The broadcast handler: apply the marks of another instance of this namespace."""
        if event.namespace != self._keyspace.namespace or event.origin == self._origin:
            return
        if self._on_marks is not None:
            self._on_marks(list(event.marks))

    async def _retry_pending(self) -> None:
        while True:
            await self._pending.wait()
            await self.backoff.wait()
            if await self.flush():
                self.backoff.reset()
            if not self.unsent:
                self._pending.clear()

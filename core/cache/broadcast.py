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

An invalidation (``send``) waits for Redis only: it bumps the counters (bounded by the tier's
timeout and breaker) and hands the marks to a background task that broadcasts them, so a slow
or blocked broker (a memory or disk alarm holds publish confirms) never delays the write that
invalidates. Its result says whether the counters were bumped; the broadcast only makes the
other instances drop their in-process copies sooner than ``l1_ttl``.

Marks go in two steps, each retried on its own: those whose counters could not be bumped (Redis
away) are bumped again, and those bumped but not broadcast (broker away, or no confirm within
``publish_timeout``) are broadcast again; the task backs off between ``min_backoff`` and
``max_backoff`` seconds after a failure until none is left. A mark is broadcast only once its
latest counter bump succeeded, so an instance that re-reads on the message finds the new
version; one bumped again while its broadcast is in flight is broadcast once more. An outage is
logged once (a WARNING when it starts, an INFO when announcements flow again), not on every
write. In-process entries are never served longer than ``l1_ttl`` anyway (``Cache``), which
bounds staleness while a broadcast is late or lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from core.bus.events import Envelope
from core.cache.events import CacheInvalidated
from core.cache.invalidation import MAX_MARKS, MarksHandler
from core.cache.keys import KeySpace
from core.cache.redis_tier import RedisTier
from core.context import causation_id, correlation_id
from core.retry import Backoff

if TYPE_CHECKING:
    from core.bus.bus import Bus
    from core.bus.transport import BroadcastSubscription

__all__ = ["BusChannel"]

log = logging.getLogger("core.cache")

_MAX_PENDING = 100_000

Cause = tuple[str | None, str | None]  # the correlation and causation ids of a write


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
        # bumped, not broadcast yet: mark -> the number of its latest bump (a mark bumped again
        # while its broadcast is in flight is broadcast once more, after that bump)
        self._unannounced: dict[str, int] = {}
        self._bumps = itertools.count()
        # the correlation and causation ids of the latest write that invalidated each mark
        self._causes: dict[str, Cause] = {}
        self._redis_away = False  # the last bump failed (logged once per outage)
        self._bus_away = False  # the last broadcast failed (logged once per outage)
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
        return len(self._unbumped | self._unannounced.keys())

    async def start(self, on_marks: MarksHandler) -> None:
        """Subscribe (attaching by itself later if the broker is away) and start broadcasting."""
        if self._subscription is not None:
            return
        self._on_marks = on_marks
        self._bus.declare_publishes(CacheInvalidated)
        self._subscription = await self._bus.broadcast(self._receive)
        self._retrier = asyncio.create_task(
            self._retry_pending(), name=f"cache-invalidations:{self._keyspace.namespace}"
        )
        if self.unsent:
            self._pending.set()  # invalidated before the start: broadcast them now

    async def stop(self) -> None:
        """Stop broadcasting and leave the broadcast (its queue goes with it)."""
        retrier, self._retrier = self._retrier, None
        if retrier is not None:
            retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retrier
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.stop()

    async def send(self, marks: Sequence[str]) -> bool:
        """Bump the counters of ``marks`` (and of those whose bump failed before) and hand them
        to the background task that broadcasts them, without waiting for the broker.

        ``True`` once every counter is bumped: from then on no reader gets a record of before
        from Redis or memcached, and other instances drop their in-process copies when the
        broadcast reaches them (``l1_ttl`` at the latest). ``False`` if Redis could not be
        reached: the marks are kept and bumped again in the background.
        """
        cause = (correlation_id.get(), causation_id.get())
        for mark in marks:
            self._causes[mark] = cause
        bumped = await self._bump([*dict.fromkeys([*marks, *self._unbumped])])
        if self.unsent > _MAX_PENDING:
            log.error("cache: %d unsent invalidations, dropping them", self.unsent)
            self._unbumped.clear()
            self._unannounced.clear()
            self._causes.clear()
        if self.unsent:
            self._pending.set()
        return bumped

    async def flush(self) -> bool:
        """Bump and broadcast what is left now; whether nothing is left."""
        return await self._flush() and not self.unsent

    async def _flush(self) -> bool:
        """Bump and broadcast what is left now; whether no attempt failed. Marks bumped before
        are broadcast even while the others' bumps fail."""
        bumped = await self._bump(list(self._unbumped))
        return await self._announce() and bumped

    async def _bump(self, marks: list[str]) -> bool:
        # every new invalidation bumps again: a record may have been stamped since the last one
        for start in range(0, len(marks), MAX_MARKS):
            chunk = marks[start : start + MAX_MARKS]
            keys = [self._keyspace.version(mark) for mark in chunk]
            if not await self._redis.invalidate(keys, keep=self._keep):
                self._unbumped.update(marks[start:])
                if not self._redis_away:
                    self._redis_away = True
                    log.warning(
                        "cache %s: cannot bump invalidation counters: Redis away; will retry",
                        self._keyspace.namespace,
                    )
                return False
            self._unbumped.difference_update(chunk)
            for mark in chunk:
                self._unannounced[mark] = next(self._bumps)
        if marks and self._redis_away and not self._unbumped:
            self._redis_away = False
            log.info("cache %s: invalidation counters bumped again", self._keyspace.namespace)
        return True

    async def _announce(self) -> bool:
        """Broadcast the marks whose latest bump succeeded; whether all of them went."""
        ready = {m: n for m, n in self._unannounced.items() if m not in self._unbumped}
        if not ready:
            return True
        if not self._bus.transport.connected:
            return self._announced(False, "not connected")  # no use waiting for it
        by_cause: dict[Cause, list[str]] = {}
        for mark in ready:
            by_cause.setdefault(self._causes.get(mark, (None, None)), []).append(mark)
        for (correlation, causation), marks in by_cause.items():
            for start in range(0, len(marks), MAX_MARKS):
                chunk = marks[start : start + MAX_MARKS]
                event = CacheInvalidated(
                    namespace=self._keyspace.namespace, origin=self._origin, marks=tuple(chunk)
                )
                envelope = Envelope.wrap(
                    event,
                    source=self._bus.source,
                    correlation_id=correlation,
                    causation_id=causation,
                )
                try:
                    async with asyncio.timeout(self._publish_timeout):
                        await self._bus.publish_envelope(envelope)
                except Exception as exc:  # PublishError, a timeout: sent again later
                    return self._announced(False, repr(exc))
                for mark in chunk:
                    if self._unannounced.get(mark) == ready[mark]:  # not bumped again meanwhile
                        del self._unannounced[mark]
                        if mark not in self._unbumped:
                            self._causes.pop(mark, None)
        return self._announced(True)

    def _announced(self, ok: bool, why: str = "") -> bool:
        """Log the start and the end of an outage of the bus once each; returns ``ok``."""
        if not ok and not self._bus_away:
            self._bus_away = True
            log.warning(
                "cache %s: cannot announce invalidations: bus away (%s); other instances drop "
                "their in-process copies within l1_ttl, announcements resume when it is back",
                self._keyspace.namespace,
                why,
            )
        elif not ok:
            log.debug("cache: invalidation broadcast failed again: %s", why)
        elif self._bus_away:
            self._bus_away = False
            log.info("cache %s: announcing invalidations again", self._keyspace.namespace)
        return ok

    async def _receive(self, event: CacheInvalidated, envelope: Envelope) -> None:
        """The broadcast handler: apply the marks of another instance of this namespace."""
        if event.namespace != self._keyspace.namespace or event.origin == self._origin:
            return
        if self._on_marks is not None:
            self._on_marks(list(event.marks))

    async def _retry_pending(self) -> None:
        """Broadcast (and bump) what is pending as soon as it is; after a failure, back off."""
        while True:
            await self._pending.wait()
            self._pending.clear()  # what is handed over during the flush sets it again
            if await self._flush():
                self.backoff.reset()
            else:
                await self.backoff.wait()
                self._pending.set()

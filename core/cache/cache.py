"""The ``Cache``: ordered tiers, the read path, invalidation between instances, warming.

One ``Cache`` per application (``cache_ctx``). The modules it is made of:

- ``core.cache.tiers``: the tiers, built from URLs in the order asked for;
- ``core.cache.flow``: how a call goes through them (single flight, the stampede lock, early
  refresh, stamps against invalidation versions);
- ``core.cache.invalidation`` and ``core.cache.broadcast``: how invalidations reach the other
  instances, over Redis pub/sub or the bus's broadcast.

Invalidation bumps the version counter of each key and tag in Redis and tells every instance,
which drops the matching in-process entries when the message arrives. Since a message can be
lost while an instance is disconnected, an in-process entry is never served longer than
``l1_ttl`` (1 s by default) after its value was read or computed: no instance serves a value
older than the last invalidation plus ``l1_ttl``. A record computed concurrently with an
invalidation carries the old stamps, so it can be written but never read.

Every remote operation is bounded by ``remote_timeout`` and guarded by a circuit breaker: a call
never raises because a tier is down, it computes (fail-open). While Redis is unreachable, nothing
can say whether a shared record was invalidated meanwhile, so records in memcached are not served
either (they are again once Redis answers): the in-process tier, bounded by ``l1_ttl``, and the
function itself carry the load.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry

from core.cache.broadcast import BusChannel
from core.cache.call import Limits
from core.cache.flow import CallPath
from core.cache.invalidation import InvalidationChannel, RedisChannel
from core.cache.keys import KeySpace, key_mark, tag_mark
from core.cache.memcached_tier import MemcachedTier
from core.cache.memory import MemoryTier
from core.cache.policy import Policy, TierName
from core.cache.redis_tier import RedisTier
from core.cache.remote import RemoteTier
from core.cache.stats import CacheCollector, CacheStats
from core.cache.tiers import TIER_NAMES, build_tiers
from core.cache.warming import Loads, WarmProgress, run_loads

if TYPE_CHECKING:
    from core.bus.bus import Bus

__all__ = ["TIER_NAMES", "Cache"]

log = logging.getLogger("core.cache")

R = TypeVar("R")


class Cache:
    """A multi-level cache: an in-process LRU, then Redis, then memcached (each optional).

    ``tiers`` orders the tiers; a tier whose URL is ``None`` is left out. Redis also carries the
    coordination (invalidation versions, stampede locks); without it, invalidation stays within
    this process (and a purely in-process cache lets entries live their full ttl). Invalidations
    reach the other instances through ``bus`` (a broadcast, ``core.cache.broadcast``) when one is
    given, through a Redis pub/sub channel otherwise. ``redis_pool_size`` bounds the
    connections to Redis. Start listening for the others' invalidations with ``start()`` (or
    ``async with``); ``close()`` stops it and closes the connections. ``clock`` (wall-clock
    seconds) can be replaced in tests.
    """

    def __init__(
        self,
        namespace: str,
        *,
        redis_url: str | None = None,
        memcached_url: str | None = None,
        tiers: Sequence[TierName] = TIER_NAMES,
        l1_max_entries: int = 10_000,
        l1_max_bytes: int = 64 * 1024 * 1024,
        l1_ttl: float = 1.0,
        remote_timeout: float = 0.1,
        redis_pool_size: int = 16,
        breaker_threshold: int = 3,
        breaker_cooldown: float = 5.0,
        lock_ttl: float = 5.0,
        lock_wait: float = 1.0,
        max_value_bytes: int = 1_000_000,
        max_ttl: float = 86_400.0,
        bus: Bus | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keyspace = KeySpace(namespace)
        self.stats = CacheStats()
        self.origin = uuid.uuid4().hex
        self._clock = clock
        self._redis_pool_size = redis_pool_size
        built = build_tiers(
            tiers,
            redis_url=redis_url,
            memcached_url=memcached_url,
            l1_max_entries=l1_max_entries,
            l1_max_bytes=l1_max_bytes,
            remote_timeout=remote_timeout,
            redis_pool_size=redis_pool_size,
            breaker_threshold=breaker_threshold,
            breaker_cooldown=breaker_cooldown,
            on_evict=self.stats.evicted,
        )
        self.memory: MemoryTier | None = built.memory
        self.redis: RedisTier | None = built.redis
        self.memcached: MemcachedTier | None = built.memcached
        self.tiers: tuple[MemoryTier | RemoteTier, ...] = built.ordered
        self._remote = built.remote
        limits = Limits(l1_ttl, lock_ttl, lock_wait, max_value_bytes, max_ttl)
        self._path = CallPath(self.keyspace, built, self.stats, limits, clock=clock)
        self._channel = self._make_channel(bus, keep=max_ttl + 60)
        self._registry = registry
        self.collector = CacheCollector(self.stats, memory=self.memory, remote=lambda: self._remote)
        if registry is not None:
            registry.register(self.collector)

    def _make_channel(self, bus: Bus | None, *, keep: float) -> InvalidationChannel | None:
        if self.redis is None:
            if self._remote:
                log.warning("cache without Redis: invalidations reach neither memcached nor others")
            elif bus is not None:
                log.warning("cache without Redis: invalidations stay in this process")
            return None
        if bus is not None:
            return BusChannel(bus, self.redis, self.keyspace, origin=self.origin, keep=keep)
        return RedisChannel(self.redis, self.keyspace, origin=self.origin, keep=keep)

    # settings

    @property
    def l1_ttl(self) -> float:
        """The longest an in-process entry is served after its value was read or computed."""
        return self._path.limits.l1_ttl

    @property
    def lock_ttl(self) -> float:
        """How long a stampede lock holds if its holder never releases it."""
        return self._path.limits.lock_ttl

    @property
    def lock_wait(self) -> float:
        """How long a caller waits for another instance's result before computing anyway."""
        return self._path.limits.lock_wait

    @property
    def max_value_bytes(self) -> int:
        """The largest encoded record stored."""
        return self._path.limits.max_value_bytes

    @property
    def max_ttl(self) -> float:
        """The longest a record lives in a remote tier."""
        return self._path.limits.max_ttl

    # lifecycle

    async def start(self) -> None:
        """Start listening for other instances' invalidations, and open the Redis connections
        (within a second at most): a handshake is several round trips, each of which would wait
        behind a whole burst of calls on the loop if it happened during one."""
        if self._channel is not None:
            await self._channel.start(self._drop_local)
        if self.redis is not None:
            warming = [self._path.spawn(self.redis.connect()) for _ in range(self._redis_pool_size)]
            await asyncio.wait(warming, timeout=1.0)

    async def close(self) -> None:
        """Stop listening and the background work, close the connections."""
        if self._channel is not None:
            await self._channel.stop()
        await self._path.close()
        for tier in self._remote:
            await tier.close()
        if self._registry is not None:
            self._registry.unregister(self.collector)
            self._registry = None

    async def __aenter__(self) -> Cache:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def listening(self) -> bool:
        """Whether invalidations from other instances are being received."""
        return self._channel is not None and self._channel.listening

    @property
    def unsent_invalidations(self) -> int:
        """Invalidated keys and tags waiting to be sent again (Redis or the bus was away)."""
        return 0 if self._channel is None else self._channel.unsent

    # public operations

    async def invalidate(self, *, keys: Iterable[str] = (), tags: Iterable[str] = ()) -> bool:
        """Invalidate ``keys`` and every entry tagged with one of ``tags``, in every tier and
        every instance.

        Returns ``True`` once the version counters are bumped in Redis (or when there is no
        Redis to bump): from then on no instance is served a record of before from Redis or
        memcached, and no in-process entry of before outlives ``l1_ttl``. Telling the other
        instances, so that they drop their in-process entries sooner, is not waited for: over
        the bus it is broadcast in the background (and again after an outage of the broker);
        over Redis pub/sub it goes with the bump. ``False`` when Redis could not be reached:
        this instance has dropped its own entries, and the invalidation is sent again as soon
        as Redis is back; until then other instances serve their in-process entries for at most
        ``l1_ttl``, but memcached records are not served either (nothing can check them).
        """
        marks = [*map(key_mark, keys), *map(tag_mark, tags)]
        if not marks:
            return True
        self._drop_local(marks)
        return True if self._channel is None else await self._channel.send(marks)

    async def warm(
        self, loads: Loads, *, concurrency: int = 8, progress: WarmProgress | None = None
    ) -> int:
        """Await ``loads`` (calls of cached functions, or an async iterable of them),
        ``concurrency`` at a time; ``core.cache.warming`` tells how.

        A failing load is logged, never raised; returns how many failed. ``progress`` counts the
        loads as they end.
        """
        return await run_loads(loads, concurrency=concurrency, progress=progress)

    def hit_ratio(self) -> dict[str, dict[str, float]]:
        """``{function: {tier: hits / lookups}}`` since the cache started."""
        return self.stats.hit_ratio()

    def record_key(self, policy: Policy[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Where the result of ``policy``'s function for these arguments is stored."""
        return self.keyspace.record(policy.keys.key(args, kwargs), policy.version)

    def call(
        self, policy: Policy[R], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Coroutine[Any, Any, R]:
        """The result of ``policy.func(*args, **kwargs)``, from the cache when possible
        (``core.cache.flow`` tells how); to be awaited. The read path's own coroutine: a hit
        in memory takes no extra frame."""
        return self._path.call(policy, args, kwargs)

    def call_json(
        self, policy: Policy[R], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Coroutine[Any, Any, bytes | None]:
        """The JSON of ``call``'s result as the cache stores it (``None`` for a ``None``
        result); to be awaited. A hit in memory neither decodes nor encodes: for a handler that
        sends the result as it is."""
        return self._path.call_json(policy, args, kwargs)

    async def refresh(self, policy: Policy[R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        """Compute the result now and store it in every tier (for warming or after a write)."""
        return await self._path.refresh(policy, args, kwargs)

    def _drop_local(self, marks: Iterable[str]) -> None:
        """Apply an invalidation to this process: the in-process entries carrying ``marks`` go,
        and lookups in flight may return what preceded it, so later callers start anew."""
        self._path.invalidated()
        if self.memory is not None:
            self.memory.drop_marks(marks)

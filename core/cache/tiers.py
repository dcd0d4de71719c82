"""Building a cache's tiers: the in-process LRU, Redis and memcached, in the order asked for.

A tier whose URL is ``None`` is left out. Each remote tier gets its own circuit breaker and is
bounded by ``remote_timeout`` per operation (``core.cache.remote``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.driver_info import DriverInfo

from core.breaker import CircuitBreaker
from core.cache.memcached_tier import MemcachedTier, memcached_address
from core.cache.memory import MemoryTier
from core.cache.policy import TierName
from core.cache.redis_tier import RedisTier
from core.cache.remote import RemoteTier

__all__ = ["TIER_NAMES", "Tiers", "build_tiers", "redis_client"]

TIER_NAMES: tuple[TierName, ...] = ("memory", "redis", "memcached")


@functools.cache
def _driver_info() -> DriverInfo:
    # redis-py reads its version from the package metadata (files) for every new connection
    # unless told once: that is blocking I/O on the loop in the middle of a burst
    return DriverInfo()


def redis_client(url: str, *, socket_timeout: float | None = 2.0) -> Redis:
    """A client without retries (the breaker decides when to try again); the tier bounds how
    many connections it uses.

    ``socket_timeout=None`` for a client whose every operation the tier bounds itself: redis-py
    would otherwise time each write (a task of its own) and each read once more.
    """
    return Redis.from_url(
        url,
        socket_connect_timeout=1.0,
        socket_timeout=socket_timeout,
        health_check_interval=30,
        driver_info=_driver_info(),
    )


@dataclass(frozen=True, slots=True)
class Tiers:
    """A cache's tiers: by name (``None`` when absent), in order, and the remote ones in order."""

    memory: MemoryTier | None
    redis: RedisTier | None
    memcached: MemcachedTier | None
    ordered: tuple[MemoryTier | RemoteTier, ...]

    @property
    def remote(self) -> tuple[RemoteTier, ...]:
        """The remote tiers, in order."""
        return tuple(tier for tier in self.ordered if isinstance(tier, RemoteTier))


def build_tiers(
    tiers: Sequence[TierName],
    *,
    redis_url: str | None,
    memcached_url: str | None,
    l1_max_entries: int,
    l1_max_bytes: int,
    remote_timeout: float,
    redis_pool_size: int,
    breaker_threshold: int,
    breaker_cooldown: float,
    on_evict: Callable[[str], None],
) -> Tiers:
    """The tiers named by ``tiers``, in that order (``ValueError`` for an unknown or repeated
    name); ``on_evict(owner)`` is told of every entry the in-process tier's bounds push out."""
    unknown = set(tiers) - set(TIER_NAMES)
    if unknown or len(set(tiers)) != len(tiers):
        raise ValueError(f"tiers must be distinct names among {TIER_NAMES}, got {tiers}")

    def breaker() -> CircuitBreaker:
        # A probe whose caller was cancelled never reports: after a cooldown, another goes.
        return CircuitBreaker(
            failure_threshold=breaker_threshold,
            cooldown=breaker_cooldown,
            probe_timeout=breaker_cooldown,
        )

    memory: MemoryTier | None = None
    redis: RedisTier | None = None
    memcached: MemcachedTier | None = None
    ordered: list[MemoryTier | RemoteTier] = []
    for name in tiers:
        if name == "memory":
            memory = MemoryTier(
                max_entries=l1_max_entries, max_bytes=l1_max_bytes, on_evict=on_evict
            )
            ordered.append(memory)
        elif name == "redis" and redis_url is not None:
            redis = RedisTier(
                redis_client(redis_url, socket_timeout=None),
                subscriber=redis_client(redis_url),
                timeout=remote_timeout,
                breaker=breaker(),
                concurrency=redis_pool_size,
            )
            ordered.append(redis)
        elif name == "memcached" and memcached_url is not None:
            host, port = memcached_address(memcached_url)
            memcached = MemcachedTier(host, port, timeout=remote_timeout, breaker=breaker())
            ordered.append(memcached)
    return Tiers(memory, redis, memcached, tuple(ordered))

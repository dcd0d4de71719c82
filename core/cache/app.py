"""Wiring a ``Cache`` into a core application: ``app[CACHE]``, its invalidations, its warm-up.

With ``invalidation="bus"`` the cache's invalidations travel as broadcasts on ``app[BUS]``
(``core.cache.broadcast``): ``cache_ctx`` then goes after ``bus_ctx`` in the resources, so that
the bus is connected before the cache subscribes and stopped after the cache has left it. An
in-memory transport never leaves its process, while the other instances of a service are other
processes: on one, invalidations go over Redis pub/sub, which reaches them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Literal

from aiohttp import web
from prometheus_client import CollectorRegistry

from core.bus.app import BUS
from core.bus.memory import InMemoryTransport
from core.cache.cache import Cache
from core.metrics import METRICS
from core.settings import BaseServiceSettings

if TYPE_CHECKING:
    from core.bus.bus import Bus

__all__ = ["CACHE", "Invalidation", "Warmup", "cache_ctx", "cache_from_settings"]

log = logging.getLogger("core.cache")

CACHE = web.AppKey("cache", Cache)

Warmup = Callable[[web.Application], Iterable[Awaitable[object]]]
Invalidation = Literal["redis", "bus"]


def cache_from_settings(
    settings: BaseServiceSettings,
    *,
    registry: CollectorRegistry | None = None,
    bus: Bus | None = None,
) -> Cache:
    """A ``Cache`` on the settings' Redis and memcached, in the settings' namespace, with its
    series in ``registry``, invalidating through ``bus`` if given (Redis pub/sub otherwise)."""
    return Cache(
        settings.redis_namespace,
        redis_url=settings.redis_url,
        memcached_url=settings.memcached_url,
        tiers=settings.cache_tiers,
        l1_max_entries=settings.cache_l1_max_entries,
        l1_max_bytes=settings.cache_l1_max_bytes,
        l1_ttl=settings.cache_l1_ttl,
        remote_timeout=settings.cache_remote_timeout,
        breaker_cooldown=settings.cache_breaker_cooldown,
        bus=bus,
        registry=registry,
    )


def _invalidation_bus(app: web.Application, invalidation: Invalidation) -> Bus | None:
    """The bus ``app``'s cache invalidates through (``None``: Redis pub/sub); see the module
    docstring. ``RuntimeError`` if the bus is asked for and the app has none yet."""
    if invalidation == "redis":
        return None
    if BUS not in app:
        raise RuntimeError("cache_ctx(invalidation='bus') goes after bus_ctx in the resources")
    bus = app[BUS]
    if isinstance(bus.transport, InMemoryTransport):
        log.info("cache invalidations over Redis pub/sub: the in-memory bus stays in-process")
        return None
    return bus


def cache_ctx(
    settings: BaseServiceSettings,
    *,
    warmup: Warmup | None = None,
    warmup_timeout: float = 30.0,
    invalidation: Invalidation = "redis",
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that sets ``app[CACHE]``, listens for invalidations and warms the cache.

    ``invalidation`` is how invalidations reach the other instances: ``"redis"`` (pub/sub) or
    ``"bus"`` (broadcasts on ``app[BUS]``: put this context after ``bus_ctx``; see the module
    docstring for the in-memory transport).

    ``warmup(app)`` returns the loads to run before the service takes traffic, usually calls of
    cached functions (``products.get(pid)`` or ``products.get.refresh(pid)``); put this context
    after the resources they need. A load that fails is logged; a warm-up that outlasts
    ``warmup_timeout`` is abandoned: the cache fills as requests come. The cache's series join
    the app's ``/metrics``.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        cache = cache_from_settings(
            settings, registry=app[METRICS].registry, bus=_invalidation_bus(app, invalidation)
        )
        app[CACHE] = cache
        await cache.start()
        try:
            if warmup is not None:
                try:
                    async with asyncio.timeout(warmup_timeout):
                        failed = await cache.warm(warmup(app))
                except TimeoutError:
                    log.warning("cache warm-up abandoned after %.0f s", warmup_timeout)
                else:
                    log.info("cache warmed (%d loads failed)", failed)
            yield
        finally:
            await cache.close()

    return ctx

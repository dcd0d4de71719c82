"""Wiring a ``Cache`` into a core application: ``app[CACHE]``, its invalidations, its warm-up.

The warm-up (``cache_warmup_ctx``) is a context of its own, after the resources its loads use
(the service's repositories are usually built after the cache): it runs in the background and
holds ``/readyz`` until it is over, so a load balancer polling readiness sends traffic only to
a warm instance.

With ``invalidation="bus"`` the cache's invalidations travel as broadcasts on ``app[BUS]``
(``core.cache.broadcast``): ``cache_ctx`` then goes after ``bus_ctx`` in the resources, so that
the bus is connected before the cache subscribes and stopped after the cache has left it. An
in-memory transport never leaves its process, while the other instances of a service are other
processes: on one, invalidations go over Redis pub/sub, which reaches them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Literal

from aiohttp import web
from prometheus_client import CollectorRegistry

from core.bus.app import BUS
from core.bus.memory import InMemoryTransport
from core.cache.cache import Cache
from core.cache.warming import Loads, WarmProgress
from core.health import HEALTH, NotReady
from core.metrics import METRICS
from core.settings import BaseServiceSettings

if TYPE_CHECKING:
    from core.bus.bus import Bus

__all__ = [
    "CACHE",
    "Invalidation",
    "Warmup",
    "cache_ctx",
    "cache_from_settings",
    "cache_warmup_ctx",
]

log = logging.getLogger("core.cache")

CACHE = web.AppKey("cache", Cache)

Warmup = Callable[[web.Application], Loads]
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
    settings: BaseServiceSettings, *, invalidation: Invalidation = "redis"
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that sets ``app[CACHE]`` and listens for invalidations.

    ``invalidation`` is how invalidations reach the other instances: ``"redis"`` (pub/sub) or
    ``"bus"`` (broadcasts on ``app[BUS]``: put this context after ``bus_ctx``; see the module
    docstring for the in-memory transport). The cache's series join the app's ``/metrics``. To
    warm the cache, add ``cache_warmup_ctx`` after the resources its loads need.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        cache = cache_from_settings(
            settings, registry=app[METRICS].registry, bus=_invalidation_bus(app, invalidation)
        )
        app[CACHE] = cache
        await cache.start()
        try:
            yield
        finally:
            await cache.close()

    return ctx


def cache_warmup_ctx(
    warmup: Warmup, *, timeout: float = 30.0, concurrency: int = 8
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that warms ``app[CACHE]`` in the background, ``/readyz`` failing
    (``"cache-warmup": "warming"``) until it is over.

    Put it after ``cache_ctx`` and after whatever ``warmup(app)`` uses: it is called once they
    have all started and returns the loads (``Cache.warm``). The warm-up never stops the
    service: a load that fails is logged, a failing ``warmup`` or one that outlasts ``timeout``
    seconds is given up with a warning, and readiness is released either way (the cache then
    fills as requests come). Meanwhile ``/healthz`` answers, so that a slow warm-up is not
    mistaken for a dead process. Ends with ``"cache warmed: N entries in X s"`` (``N``: the
    loads that succeeded).
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        done = asyncio.Event()

        async def check() -> None:
            if not done.is_set():
                raise NotReady("warming")

        app[HEALTH].add(_WARMUP_CHECK, check)
        task = asyncio.create_task(_warm(app, warmup, timeout, concurrency))

        def over(_: asyncio.Task[None]) -> None:
            done.set()
            app[HEALTH].remove(_WARMUP_CHECK)

        task.add_done_callback(over)
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return ctx


_WARMUP_CHECK = "cache-warmup"


async def _warm(app: web.Application, warmup: Warmup, limit: float, concurrency: int) -> None:
    """Run one warm-up, bounded by ``limit`` seconds, and log how it went."""
    progress = WarmProgress()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(limit):
            await app[CACHE].warm(warmup(app), concurrency=concurrency, progress=progress)
    except TimeoutError:
        log.warning(
            "cache warm-up abandoned after %.1f s (%d entries warmed): serving what is missing "
            "cold",
            limit,
            progress.warmed,
        )
        return
    except Exception:
        log.warning("cache warm-up failed: serving cold", exc_info=True)
        return
    if progress.failed:
        log.warning("cache warm-up: %d loads failed", progress.failed)
    log.info("cache warmed: %d entries in %.2f s", progress.warmed, loop.time() - started)

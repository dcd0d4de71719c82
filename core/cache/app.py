"""Wiring a ``Cache`` into a core application: ``app[CACHE]``, its listener and its warm-up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry

from core.cache.cache import Cache
from core.keys import CACHE, METRICS
from core.settings import BaseServiceSettings

__all__ = ["Warmup", "cache_ctx", "cache_from_settings"]

log = logging.getLogger("core.cache")

Warmup = Callable[[web.Application], Iterable[Awaitable[object]]]


def cache_from_settings(
    settings: BaseServiceSettings, *, registry: CollectorRegistry | None = None
) -> Cache:
    """A ``Cache`` on the settings' Redis and memcached, in the settings' namespace, with its
    series in ``registry``."""
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
        registry=registry,
    )


def cache_ctx(
    settings: BaseServiceSettings,
    *,
    warmup: Warmup | None = None,
    warmup_timeout: float = 30.0,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that sets ``app[CACHE]``, listens for invalidations and warms the cache.

    ``warmup(app)`` returns the loads to run before the service takes traffic, usually calls of
    cached functions (``products.get(pid)`` or ``products.get.refresh(pid)``); put this context
    after the resources they need. A load that fails is logged; a warm-up that outlasts
    ``warmup_timeout`` is abandoned: the cache fills as requests come. The cache's series join
    the app's ``/metrics``.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        cache = cache_from_settings(settings, registry=app[METRICS].registry)
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

"""Redis through ``redis.asyncio``: one client per app, its readiness check, namespaced keys.

Every client has a bounded pool that waits for a free connection (redis-py's
``BlockingConnectionPool``): at most ``max_connections`` at once, a call waiting up to
``pool_timeout`` seconds for one (then ``redis.exceptions.ConnectionError``, a 503). redis-py's
default pool instead raises ``MaxConnectionsError`` at once past 100 connections in use: a burst
of concurrent requests, each with a Redis call or two in flight, failed there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web
from redis.asyncio import BlockingConnectionPool, Redis

from core.health import HEALTH
from core.keys import REDIS

__all__ = ["DEFAULT_MAX_CONNECTIONS", "DEFAULT_POOL_TIMEOUT", "create_redis", "redis_ctx"]

DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_POOL_TIMEOUT = 2.0


def create_redis(
    url: str,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT,
    socket_timeout: float = 2.0,
    connect_timeout: float = 1.0,
) -> Redis:
    """A client with short timeouts (a dead Redis answers quickly rather than hanging requests)
    and a bounded pool of ``max_connections`` that waits up to ``pool_timeout`` for a free one."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        health_check_interval=30,
        retry_on_timeout=False,
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it too


def redis_ctx(
    url: str,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that opens ``app[REDIS]`` and registers its readiness check (services
    pass ``REDIS_MAX_CONNECTIONS`` and ``REDIS_POOL_TIMEOUT``)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        client = create_redis(url, max_connections=max_connections, pool_timeout=pool_timeout)
        app[REDIS] = client

        async def check() -> None:
            await client.ping()

        app[HEALTH].add("redis", check)
        try:
            yield
        finally:
            app[HEALTH].remove("redis")
            await client.aclose()

    return ctx

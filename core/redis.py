"""Redis through ``redis.asyncio``: one client per app, its readiness check, namespaced keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web
from redis.asyncio import Redis

from core.health import HEALTH
from core.keys import REDIS

__all__ = ["create_redis", "redis_ctx"]


def create_redis(url: str) -> Redis:
    """A client with short timeouts: a dead Redis answers quickly rather than hanging requests."""
    return Redis.from_url(
        url,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def redis_ctx(url: str) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that opens ``app[REDIS]`` and registers its readiness check."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        client = create_redis(url)
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

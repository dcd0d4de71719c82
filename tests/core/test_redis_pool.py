"""core.redis against the real Redis: a bounded pool that waits for a free connection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.exceptions
from aiohttp import web
from redis.asyncio import Redis

import core
from core.redis import create_redis
from core.testing import assert_problem
from tests.core.conftest import REDIS_URL, ClientFactory, SettingsFactory


@pytest.fixture
async def small() -> AsyncIterator[Redis]:
    """A client of at most two connections, waiting 0.2 s at most for one."""
    client = create_redis(REDIS_URL, max_connections=2, pool_timeout=0.2)
    yield client
    await client.aclose()


async def test_a_burst_past_the_pool_waits_for_a_connection_instead_of_failing(
    small: Redis,
) -> None:
    # redis-py's default pool raised MaxConnectionsError here, past its 100 connections.
    answers = await asyncio.gather(*(small.ping() for _ in range(200)))
    assert answers == [True] * 200
    pool = small.connection_pool
    assert len(pool._available_connections) + len(pool._in_use_connections) <= 2


async def test_no_connection_free_in_time_is_a_connection_error() -> None:
    client = create_redis(REDIS_URL, max_connections=1, pool_timeout=0.2)
    try:
        held = await client.connection_pool.get_connection()
        try:
            started = time.monotonic()
            with pytest.raises(redis.exceptions.ConnectionError):
                await client.ping()
            assert 0.15 < time.monotonic() - started < 2
        finally:
            await client.connection_pool.release(held)
        assert await client.ping() is True  # free again
    finally:
        await client.aclose()


async def test_through_an_app_a_saturated_pool_is_503_with_retry_after(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    router = core.Router()

    @router.get("/held")
    async def held(request: web.Request) -> dict[str, bool]:
        client = request.app[core.REDIS]
        connection = await client.connection_pool.get_connection()  # the only one
        try:
            return {"pong": bool(await client.ping())}
        finally:
            await client.connection_pool.release(connection)

    resources = [core.redis_ctx(REDIS_URL, max_connections=1, pool_timeout=0.2)]
    app = core.create_app("t", make_settings(), routers=[router], resources=resources)
    client = await service_client(app)
    response = await client.get("/held")
    await assert_problem(response, 503)
    assert response.headers["Retry-After"] == "1"
    assert (await client.get("/readyz")).status == 200

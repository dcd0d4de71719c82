"""core.db against the real PostgreSQL: JSON codecs, transactions, the pool resource."""

import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp import web

import core
from core.db import create_pool, transaction
from core.testing import assert_problem
from tests.core.conftest import POSTGRES_DSN, ClientFactory, SettingsFactory


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    # One connection, so that a temporary table is visible to every acquire.
    pool = await create_pool(POSTGRES_DSN, min_size=1, max_size=1)
    yield pool
    await pool.close()


async def test_json_and_jsonb_round_trip_through_orjson(pool: asyncpg.Pool) -> None:
    value = {"name": "Mug", "tags": ["é", "✓"], "price": {"cents": 1299}, "none": None}
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT $1::jsonb", value) == value
        assert await conn.fetchval("SELECT $1::json", value) == value
        assert await conn.fetchval("SELECT '{\"a\": [1, 2]}'::jsonb") == {"a": [1, 2]}
        assert await conn.fetchval("SELECT current_setting('application_name')") == "aioshop"


async def test_transaction_commits_on_success_and_rolls_back_on_error(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await conn.execute("CREATE TEMPORARY TABLE core_tx_test (v int)")
    try:
        async with transaction(pool) as conn:
            await conn.execute("INSERT INTO core_tx_test VALUES (1)")

        async def insert_then_fail() -> None:
            async with transaction(pool) as conn:
                await conn.execute("INSERT INTO core_tx_test VALUES (2)")
                raise RuntimeError("abort")

        with pytest.raises(RuntimeError, match="abort"):
            await insert_then_fail()
        async with pool.acquire() as conn:
            assert await conn.fetch("SELECT v FROM core_tx_test ORDER BY v") == [(1,)]
    finally:
        async with pool.acquire() as conn:
            await conn.execute("DROP TABLE IF EXISTS core_tx_test")


async def test_postgres_ctx_opens_and_closes_the_pool(make_settings: SettingsFactory) -> None:
    app = core.create_app("t", make_settings(), resources=[core.postgres_ctx(POSTGRES_DSN)])
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        pool = app[core.DB_POOL]
        assert await pool.fetchval("SELECT 41 + 1") == 42
    finally:
        await runner.cleanup()
    assert pool.is_closing()


async def test_a_maintenance_pool_keeps_the_server_s_statement_timeout() -> None:
    """``statement_timeout=None`` (a read-model rebuild): no request's limit on its statements."""
    server = await asyncpg.connect(POSTGRES_DSN)
    try:
        default = await server.fetchval("SHOW statement_timeout")
    finally:
        await server.close()
    pool = await create_pool(POSTGRES_DSN, min_size=1, max_size=1, statement_timeout=None)
    try:
        assert await pool.fetchval("SHOW statement_timeout") == default
    finally:
        await pool.close()


async def test_a_statement_past_the_statement_timeout_is_cancelled_by_the_server() -> None:
    pool = await create_pool(POSTGRES_DSN, min_size=1, max_size=1, statement_timeout=0.2)
    try:
        assert await pool.fetchval("SHOW statement_timeout") == "200ms"
        started = time.monotonic()
        with pytest.raises(asyncpg.QueryCanceledError, match="statement timeout"):
            await pool.fetchval("SELECT pg_sleep(5)")
        assert time.monotonic() - started < 2  # cancelled, not waited out
        assert await pool.fetchval("SELECT 1") == 1  # the connection stays usable
    finally:
        await pool.close()


async def test_acquiring_past_the_acquire_timeout_fails_everywhere_the_pool_is_used() -> None:
    pool = await create_pool(POSTGRES_DSN, min_size=1, max_size=1, acquire_timeout=0.2)
    try:
        async with pool.acquire():  # the only connection, held
            for attempt in (
                pool.acquire,
                lambda: pool.fetchval("SELECT 1"),
                lambda: transaction(pool).__aenter__(),
            ):
                started = time.monotonic()
                with pytest.raises(TimeoutError):
                    await attempt()
                assert 0.15 < time.monotonic() - started < 2
        assert await pool.fetchval("SELECT 1") == 1  # free again: no wait
    finally:
        await pool.close()


async def test_a_slow_or_saturated_database_is_503_with_retry_after(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    router = core.Router()

    @router.get("/slow")
    async def slow(request: web.Request) -> dict[str, Any]:
        await request.app[core.DB_POOL].fetchval("SELECT pg_sleep(5)")
        return {}

    @router.get("/saturated")
    async def saturated(request: web.Request) -> dict[str, Any]:
        pool = request.app[core.DB_POOL]
        async with pool.acquire(), transaction(pool) as conn:  # wants a second connection
            await conn.execute("SELECT 1")
        return {}

    database = core.postgres_ctx(
        POSTGRES_DSN, min_size=1, max_size=1, statement_timeout=0.2, acquire_timeout=0.2
    )
    app = core.create_app("t", make_settings(), routers=[router], resources=[database])
    client = await service_client(app)
    for path in ("/slow", "/saturated"):
        response = await client.get(path)
        body = await assert_problem(response, 503)
        assert response.headers["Retry-After"] == "1", path
        assert "pg_sleep" not in str(body)
    assert (await client.get("/readyz")).status == 200  # the pool recovered

"""core.db against the real PostgreSQL: JSON codecs, transactions, the pool resource."""

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web

import core
from core.db import create_pool, transaction
from tests.core.conftest import POSTGRES_DSN, SettingsFactory


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

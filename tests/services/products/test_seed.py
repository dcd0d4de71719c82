"""``aioshop seed --products N``: a realistic catalog in bulk, run as a real process."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

import migrations
from services.products import Settings, create_products_app
from tests.services.products.helpers import PRODUCTS, Client

CLI = [sys.executable, "-m", "services.cli"]


@pytest.fixture(scope="session")
def seed_dsn(throwaway_database: Callable[[str, Any], str]) -> str:
    """A products database of the seed tests alone (they count what it holds)."""
    return throwaway_database("products_seed", migrations.location("products"))


@pytest.fixture
async def seed_db(seed_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(seed_dsn)
    yield conn
    await conn.execute("TRUNCATE products, categories, inventory, outbox CASCADE")
    await conn.close()


async def run_seed(dsn: str, namespace: str, *args: str) -> tuple[int, str, str]:
    """``aioshop seed ARGS`` against ``dsn``: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "seed",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "PRODUCTS_DATABASE_URL": dsn,
            "REDIS_NAMESPACE": namespace,
            "AIOSHOP_ENV": "test",
            "LOG_LEVEL": "WARNING",
        },
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_seed_fills_a_realistic_catalog_and_publishes_nothing(
    seed_dsn: str,
    seed_db: asyncpg.Connection,
    products_settings: Settings,
    service_client: Callable[[Any], Awaitable[Client]],
) -> None:
    settings = products_settings.model_copy(update={"database_url": seed_dsn})
    client = await service_client(create_products_app(settings))
    empty = await client.get(PRODUCTS, params={"limit": "5"})
    assert (await empty.json())["items"] == []  # now cached, empty

    code, out, err = await run_seed(
        seed_dsn,
        settings.redis_namespace,
        "--products",
        "2000",
        "--categories",
        "12",
        "--batch-size",
        "300",
        "--seed",
        "42",
    )

    assert code == 0, err
    assert "seeded 2000 products" in out
    assert "in 12 categories" in out
    assert "seeding products [" in err
    assert "100% 2,000/2,000" in err
    assert await seed_db.fetchval("SELECT count(*) FROM products") == 2000
    assert await seed_db.fetchval("SELECT count(*) FROM inventory") == 2000
    assert await seed_db.fetchval("SELECT count(*) FROM categories") == 12
    # departments with sub-categories; products only in the leaves
    assert await seed_db.fetchval("SELECT count(*) FROM categories WHERE parent_id IS NULL") == 8
    in_parents = await seed_db.fetchval(
        """
        SELECT count(*) FROM products p
         WHERE EXISTS (SELECT 1 FROM categories c WHERE c.parent_id = p.category_id)
        """
    )
    assert in_parents == 0
    stats = await seed_db.fetchrow(
        """
        SELECT count(DISTINCT name) AS names, min(price_cents) AS low, max(price_cents) AS high,
               bool_and(price_cents % 100 = 99) AS ends_in_99,
               count(*) FILTER (WHERE i.on_hand = 0) AS sold_out,
               count(DISTINCT sku) AS skus, bool_and(length(description) > 20) AS described,
               bool_and(attributes ? 'color') AS attributed
          FROM products p JOIN inventory i ON i.product_id = p.id
        """
    )
    assert stats["names"] > 500
    assert stats["low"] < 1000 < 100_000 < stats["high"]
    assert stats["ends_in_99"]
    assert 100 < stats["sold_out"] < 400
    assert stats["skus"] == 2000
    assert stats["described"]
    assert stats["attributed"]
    assert await seed_db.fetchval("SELECT count(*) FROM outbox") == 0
    # running instances drop their cached listings: the new catalog shows at once
    listed = await client.get(PRODUCTS, params={"limit": "5"})
    assert len((await listed.json())["items"]) == 5
    ranked = await client.get(PRODUCTS, params={"q": "lamp", "limit": "3"})
    assert len((await ranked.json())["items"]) == 3

    # a second run adds products and reuses the categories by slug
    code, out, err = await run_seed(seed_dsn, settings.redis_namespace, "--products", "10")
    assert code == 0, err
    assert await seed_db.fetchval("SELECT count(*) FROM products") == 2010
    assert await seed_db.fetchval("SELECT count(*) FROM categories") == 40


@pytest.mark.parametrize(
    "args", [["--products", "-1"], ["--products", "5", "--categories", "0"], ["--products", "x"]]
)
async def test_seed_refuses_bad_arguments(
    seed_dsn: str, seed_db: asyncpg.Connection, args: list[str]
) -> None:
    code, _, err = await run_seed(seed_dsn, f"test-{uuid.uuid4().hex[:8]}", *args)
    assert code == 2, err
    assert await seed_db.fetchval("SELECT count(*) FROM products") == 0

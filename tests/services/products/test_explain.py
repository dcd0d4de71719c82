"""Every filter and sort of GET /products is served by an index (EXPLAIN on a seeded catalog).

The catalog is seeded (``services.products.seed``, 20,000 products, analyzed) into a database
of its own, so the planner sees realistic sizes and statistics; ``enable_seqscan`` is left on.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import orjson
import pytest

import migrations
from services.products.repository import CatalogRepository, ListingQuery, SortKey
from services.products.seed import seed

PRODUCTS = 20_000


@pytest.fixture(scope="session")
def explain_dsn(throwaway_database: Callable[[str, Any], str]) -> str:
    """A products database with a seeded, analyzed catalog."""
    dsn = throwaway_database("products_explain", migrations.location("products"))
    asyncio.run(seed(dsn, products=PRODUCTS, categories=40, random_seed=1))
    return dsn


@pytest.fixture
async def explain_pool(explain_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(explain_dsn, min_size=1, max_size=2)
    assert pool is not None
    yield pool
    await pool.close()


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a JSON plan."""
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


async def plan_of(pool: asyncpg.Pool, query: ListingQuery) -> list[dict[str, Any]]:
    """The nodes of the plan of ``query`` as the repository runs it."""
    repository = CatalogRepository(pool)
    categories = await repository.subtree(query.category_id) if query.category_id else []
    sql, args = query.sql(categories)
    raw = await pool.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    return list(nodes(orjson.loads(raw)[0]["Plan"]))


CASES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "newest first": ({"sort": "-created_at"}, {"products_created_id"}),
    "price": ({"sort": "price"}, {"products_price_id"}),
    "price, next page": (
        {"sort": "-price", "after": SortKey(5099, uuid.UUID(int=0))},
        {"products_price_id"},
    ),
    "name": ({"sort": "name"}, {"products_name_id"}),
    "price range": ({"sort": "price", "min_price": 1000, "max_price": 2000}, {"products_price_id"}),
    "leaf category": ({"sort": "-created_at", "category": "leaf"}, {"products_category_created"}),
    "leaf category by price": (
        {"sort": "price", "category": "leaf"},
        {"products_category_price"},
    ),
    "department (with sub-categories)": ({"sort": "-created_at", "category": "top"}, set()),
    "in stock": ({"sort": "price", "in_stock": True}, {"inventory_pkey"}),
    "sold out": ({"sort": "price", "in_stock": False}, {"inventory_sold_out", "inventory_pkey"}),
    "full text": ({"sort": "rank", "q": "walnut lamp"}, {"products_search"}),
    "full text by price": ({"sort": "price", "q": "ceramic mug"}, {"products_search"}),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_each_filter_and_sort_uses_an_index(explain_pool: asyncpg.Pool, case: str) -> None:
    params, wanted = CASES[case]
    params = dict(params)
    if "category" in params:
        where = "parent_id IS NULL" if params.pop("category") == "top" else "parent_id IS NOT NULL"
        params["category_id"] = await explain_pool.fetchval(
            f"SELECT id FROM categories WHERE {where} ORDER BY slug LIMIT 1"
        )
    query = ListingQuery(limit=21, **params)

    plan = await plan_of(explain_pool, query)

    scans = {(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in plan}
    used = {index for _, _, index in scans if index}
    assert not [s for s in scans if s[0] == "Seq Scan" and s[1] in ("products", "inventory")], scans
    assert any(index.startswith(("products_", "inventory_")) for index in used), scans
    if wanted:
        assert used & wanted, (wanted, scans)


async def test_the_seeded_catalog_is_what_the_plans_ran_on(explain_pool: asyncpg.Pool) -> None:
    assert await explain_pool.fetchval("SELECT count(*) FROM products") == PRODUCTS
    assert await explain_pool.fetchval("SELECT count(*) FROM inventory") == PRODUCTS
    analyzed = await explain_pool.fetchval(
        "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'products'"
    )
    assert analyzed is True

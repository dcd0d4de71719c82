"""The warming rows: the first window after a products instance starts, with and without warming.

A new products instance joins the running system (same database and bus) twice, once with
``PRODUCTS_CACHE_WARMUP=false`` and once with it on, each time with a Redis namespace of its own,
so its shared tiers are cold as well: a restart after the cache servers lost their data, or a
first deploy, where warming matters most (a restart beside warm shared tiers only loses the
in-process tier, whose entries live a second). As soon as ``/readyz`` passes, wrk reads the hot
set for the window: the first page of categories and of the listing, the most reserved products
and their categories' first pages, what a shop's first visitors ask for.
"""

from __future__ import annotations

import asyncio

import asyncpg

from perf.suite.load import Request, run_load
from perf.suite.system import System, extra_products
from perf.suite.table import Row
from services.products.repository.hot import HotRepository

__all__ = ["hot_paths", "warming_rows"]

PRODUCTS = "/api/v1/products"


async def hot_paths(dsn: str, products: int) -> tuple[str, ...]:
    """The paths of the hot set (as ``services.products.service.warming`` defines it)."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        hot = await HotRepository(pool).most_reserved(products)
        categories = await pool.fetch("SELECT id FROM categories ORDER BY id LIMIT 20")
    finally:
        await pool.close()
    paths = ["/api/v1/categories?limit=20", f"{PRODUCTS}?limit=20"]
    paths += [f"{PRODUCTS}/{product_id}" for product_id in hot]
    paths += [f"{PRODUCTS}?limit=20&category={row['id']}" for row in categories]
    return tuple(paths)


def warming_rows(system: System, *, window: float, connections: int, tool: str) -> list[Row]:
    """The first ``window`` seconds of a new instance, without and then with warming."""
    paths = asyncio.run(hot_paths(system.databases["products"], 200))
    rows: list[Row] = []
    for warm in (False, True):
        env = {
            "PRODUCTS_CACHE_WARMUP": "true" if warm else "false",
            "REDIS_NAMESPACE": f"bench-{system.suffix}-{'warm' if warm else 'cold'}",
        }
        with extra_products(system, f"products-{'warm' if warm else 'cold'}", env) as started:
            url, ready_after = started
            result = run_load(
                Request(url + paths[0], paths=paths),
                seconds=window,
                connections=connections,
                tool=tool,
            )
        notes = [f"ready {ready_after:.1f} s after start", f"{len(paths)} hot paths"]
        if result.errors:
            notes.append(f"{result.errors} errors of {result.requests}")
        rows.append(
            Row(
                group="warming",
                name=f"first {window:g} s after a start with cold tiers, warming "
                + ("on" if warm else "off"),
                throughput=result.rps,
                p50_ms=result.p50_ms,
                p99_ms=result.p99_ms,
                note="; ".join(notes),
            )
        )
    cold, warmed = rows
    if cold.p99_ms and warmed.p99_ms:
        warmed.ratio = cold.p99_ms / warmed.p99_ms
        warmed.baseline = "warming off (p99, higher is better)"
    return rows

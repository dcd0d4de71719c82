"""The cache warm-up of a products instance: the hot set is in its in-process tier before
``/readyz`` passes; off, the first read misses; a failing warm-up still lets it become ready."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from core import DB_POOL
from core.cache import CACHE
from core.testing import wait_for
from services.products import Settings, create_products_app
from services.products.keys import PRODUCTS_SERVICE
from services.products.repository.hot import HotRepository
from tests.services.products.conftest import Catalog
from tests.services.products.helpers import Client, product_path

ClientFactory = Callable[[Any], Awaitable[Client]]


def instance_settings(settings: Settings, **changes: Any) -> Settings:
    """The test's settings for another instance, with a Redis namespace of its own (nothing it
    reads was cached by the test's other instance) and in-process entries kept long enough
    (60 s) for a loaded machine to reach the first read before they expire."""
    changes.setdefault("redis_namespace", f"{settings.redis_namespace}:{uuid.uuid4().hex[:6]}")
    changes.setdefault("cache_l1_ttl", 60.0)
    return settings.model_copy(update=changes)


async def reserve(db: asyncpg.Connection, catalog: Catalog, product_id: str, times: int) -> None:
    """Record ``times`` reservations of one unit of the product, as the order saga would."""
    for _ in range(times):
        order_id = catalog.order()
        await db.execute(
            "INSERT INTO reservations (order_id, status, product_ids) VALUES ($1, 'committed', $2)",
            order_id,
            [uuid.UUID(product_id)],
        )
        await db.execute(
            "INSERT INTO reservation_lines (order_id, product_id, quantity) VALUES ($1, $2, 1)",
            order_id,
            uuid.UUID(product_id),
        )


async def ready(client: Client) -> None:
    """Wait until the instance's ``/readyz`` passes."""

    async def passes() -> bool:
        return (await client.get("/readyz")).status == 200

    await wait_for(passes, within=15.0)


def first_read_stats(client: Client) -> tuple[int, int, int]:
    """Memory hits, memory misses and loads of the product reads so far."""
    stats = client.app[CACHE].stats.function("products.product")
    return stats.hits.get("memory", 0), stats.misses.get("memory", 0), stats.loads


async def test_the_most_reserved_products_are_ranked_by_reservations(
    catalog: Catalog, products_db: asyncpg.Connection, products_client: Client
) -> None:
    hottest, hot, cold = [await catalog.product() for _ in range(3)]
    await reserve(products_db, catalog, hot["id"], 2)
    await reserve(products_db, catalog, hottest["id"], 3)
    ranked = await HotRepository(products_client.app[DB_POOL]).most_reserved(1000)
    mine = [str(pid) for pid in ranked if str(pid) in {hottest["id"], hot["id"], cold["id"]}]
    assert mine == [hottest["id"], hot["id"]]


async def test_a_warm_instance_has_its_hot_products_in_memory_before_it_is_ready(
    catalog: Catalog,
    products_db: asyncpg.Connection,
    products_settings: Settings,
    service_client: ClientFactory,
) -> None:
    hot = await catalog.product(name="Hot mug")
    await reserve(products_db, catalog, hot["id"], 3)
    # older than the first listing page: only its reservations can make it hot
    await products_db.execute(
        "UPDATE products SET created_at = now() - interval '10 years' WHERE id = $1",
        uuid.UUID(hot["id"]),
    )

    client = await service_client(create_products_app(instance_settings(products_settings)))
    await ready(client)

    service = client.app[PRODUCTS_SERVICE]
    cache = client.app[CACHE]
    assert cache.memory is not None
    key = service.catalog._cached_product.key(uuid.UUID(hot["id"]))
    assert cache.memory.get(key, time.time()) is not None
    hits, misses, loads = first_read_stats(client)
    resp = await client.get(product_path(hot["id"]))
    assert resp.status == 200
    assert (await resp.json())["name"] == "Hot mug"
    assert first_read_stats(client) == (hits + 1, misses, loads)  # a hit, nothing computed


async def test_without_warm_up_the_first_read_misses(
    catalog: Catalog,
    products_db: asyncpg.Connection,
    products_settings: Settings,
    service_client: ClientFactory,
) -> None:
    hot = await catalog.product(name="Hot mug")
    await reserve(products_db, catalog, hot["id"], 3)

    client = await service_client(
        create_products_app(instance_settings(products_settings, cache_warmup=False))
    )
    await ready(client)

    assert first_read_stats(client) == (0, 0, 0)
    resp = await client.get(product_path(hot["id"]))
    assert resp.status == 200
    assert first_read_stats(client) == (0, 1, 1)  # missed memory, computed


async def test_a_failing_warm_up_still_lets_the_instance_become_ready(
    catalog: Catalog,
    products_settings: Settings,
    service_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    product = await catalog.product(name="Plain mug")

    async def unavailable(self: HotRepository, limit: int, *, within_days: int = 30) -> None:
        raise RuntimeError("reservations unreadable")

    monkeypatch.setattr(HotRepository, "most_reserved", unavailable)
    with caplog.at_level(logging.WARNING, logger="core.cache"):
        client = await service_client(create_products_app(instance_settings(products_settings)))
        await ready(client)
    assert "cache warm-up failed: serving cold" in [r.getMessage() for r in caplog.records]
    resp = await client.get(product_path(product["id"]))
    assert resp.status == 200

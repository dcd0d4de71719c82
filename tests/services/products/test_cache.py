"""Cached reads (memory, Redis, memcached) and precise invalidation, across instances."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from core.cache import CACHE
from core.testing import wait_for
from services.products import Settings, create_products_app
from services.products.keys import PRODUCTS_SERVICE
from services.products.service import ProductsService
from tests.services.products.conftest import Catalog
from tests.services.products.helpers import (
    PRODUCTS,
    Client,
    inventory_path,
    product_path,
)

ClientFactory = Callable[[Any], Awaitable[Client]]


def service_of(client: Client) -> ProductsService:
    """The running service behind ``client``."""
    return client.app[PRODUCTS_SERVICE]


async def listening(*clients: Client) -> None:
    """Wait until every client's cache receives the others' invalidations."""

    async def subscribed() -> bool:
        return all(c.app[CACHE].listening for c in clients)

    await wait_for(subscribed)


async def get_json(client: Client, path: str, **params: Any) -> Any:
    """GET ``path`` (which must succeed) and return its body."""
    resp = await client.get(path, params={k: str(v) for k, v in params.items()})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_a_product_read_is_served_from_the_cache_on_every_tier(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    product = await catalog.product(name="Cached mug")
    service = service_of(products_client)
    pid = uuid.UUID(product["id"])
    assert await get_json(products_client, product_path(pid)) == product
    # a change behind the service's back is not seen: the read comes from the cache
    await products_db.execute("UPDATE products SET name = 'Sneaky' WHERE id = $1", pid)

    assert (await get_json(products_client, product_path(pid)))["name"] == "Cached mug"

    cache = service.cache
    assert cache is not None
    assert cache.redis is not None
    assert cache.memcached is not None
    key = service.catalog._cached_product.key(pid)
    assert await cache.redis.get(key) is not None
    assert await cache.memcached.get(key) is not None
    stats = cache.stats.function("products.product")
    assert stats.hits.get("memory", 0) >= 1
    # a write through the service invalidates it, everywhere
    resp = await products_client.patch(
        product_path(pid), json={"description": "now with a handle"}, headers=catalog.admin
    )
    assert resp.status == 200
    fresh = await get_json(products_client, product_path(pid))
    assert (fresh["name"], fresh["description"]) == ("Sneaky", "now with a handle")


async def test_an_update_through_one_instance_shows_through_another_within_a_second(
    catalog: Catalog,
    service_client: ClientFactory,
    products_settings: Settings,
    products_client: Client,
) -> None:
    other = await service_client(create_products_app(products_settings))
    await listening(products_client, other)
    category = await catalog.category()
    product = await catalog.product(name="Teapot", price_cents=3000, category_id=category["id"])
    path = product_path(product["id"])
    for _ in range(2):  # the second read is a cache hit on the other instance
        assert (await get_json(other, path))["name"] == "Teapot"
    assert service_of(other).cache.stats.function("products.product").hits.get("memory", 0) >= 1  # type: ignore[union-attr]
    listed = await get_json(other, PRODUCTS, category=category["id"])
    assert [p["price_cents"] for p in listed["items"]] == [3000]

    resp = await products_client.patch(
        path, json={"name": "Big teapot", "price_cents": 3500}, headers=catalog.admin
    )
    assert resp.status == 200
    written = time.monotonic()

    async def updated() -> bool:
        body = await get_json(other, path)
        page = await get_json(other, PRODUCTS, category=category["id"])
        return body["name"] == "Big teapot" and [p["price_cents"] for p in page["items"]] == [3500]

    await wait_for(updated, within=1.0)
    assert time.monotonic() - written < 1.0

    # stock, through a write of one and a reservation of the other
    resp = await products_client.put(
        inventory_path(product["id"]), json={"on_hand": 4}, headers=catalog.admin
    )
    assert resp.status == 200

    async def stock(value: int) -> bool:
        return bool((await get_json(other, path))["stock"] == value)

    await wait_for(lambda: stock(4), within=1.0)
    await service_of(other).reserve(catalog.order(), [(uuid.UUID(product["id"]), 3)])
    await wait_for(lambda: stock(1), within=1.0)
    inventory = await get_json(products_client, inventory_path(product["id"]))
    assert (inventory["reserved"], inventory["available"]) == (3, 1)


async def test_writes_invalidate_only_the_listings_they_change(
    catalog: Catalog, products_client: Client
) -> None:
    service = service_of(products_client)
    assert service.cache is not None
    pages = service.cache.stats.function("products.page")
    parent = await catalog.category("Parent")
    x = await catalog.category("X", parent_id=parent["id"])
    y = await catalog.category("Y")
    px = await catalog.product(price_cents=100, stock=10, category_id=x["id"])
    await catalog.product(price_cents=200, stock=10, category_id=y["id"])
    listings = {
        "x": {"category": x["id"]},
        "parent": {"category": parent["id"]},
        "y": {"category": y["id"]},
        "x in stock": {"category": x["id"], "in_stock": "true"},
    }

    async def loaded_by(write: Callable[[], Awaitable[Any]]) -> set[str]:
        """The listings that had to be recomputed after ``write``."""
        for params in listings.values():
            await get_json(products_client, PRODUCTS, **params)  # warm
        await write()
        reloaded = set()
        for name, params in listings.items():
            before = pages.loads
            await get_json(products_client, PRODUCTS, **params)
            if pages.loads > before:
                reloaded.add(name)
        return reloaded

    def patch(body: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
        return lambda: products_client.patch(
            product_path(px["id"]), json=body, headers=catalog.admin
        )

    def stock(on_hand: int) -> Callable[[], Awaitable[Any]]:
        return lambda: products_client.put(
            inventory_path(px["id"]), json={"on_hand": on_hand}, headers=catalog.admin
        )

    assert await loaded_by(patch({"attributes": {"size": "L"}})) == set()
    assert await loaded_by(patch({"price_cents": 150})) == {"x", "parent", "x in stock"}
    assert await loaded_by(patch({"name": "Renamed"})) == {"x", "parent", "x in stock"}
    assert await loaded_by(stock(5)) == set()  # still in stock: no listing changes
    assert await loaded_by(stock(0)) == {"x in stock"}  # sold out: in_stock lists change
    assert await loaded_by(patch({"category_id": y["id"]})) == set(listings)
    # the items of a cached page are still current: they are read per product
    page = await get_json(products_client, PRODUCTS, category=y["id"], sort="price")
    assert [(p["name"], p["stock"]) for p in page["items"]] == [("Renamed", 0), ("Plain mug", 10)]


async def test_a_category_move_invalidates_its_old_and_new_ancestors(
    catalog: Catalog, products_client: Client
) -> None:
    old, new = await catalog.category("Old"), await catalog.category("New")
    moving = await catalog.category("Moving", parent_id=old["id"])
    product = await catalog.product(category_id=moving["id"])
    assert [
        p["id"] for p in (await get_json(products_client, PRODUCTS, category=old["id"]))["items"]
    ] == [product["id"]]
    assert (await get_json(products_client, PRODUCTS, category=new["id"]))["items"] == []

    resp = await products_client.patch(
        f"/api/v1/categories/{moving['id']}", json={"parent_id": new["id"]}, headers=catalog.admin
    )
    assert resp.status == 200

    assert (await get_json(products_client, PRODUCTS, category=old["id"]))["items"] == []
    moved = await get_json(products_client, PRODUCTS, category=new["id"])
    assert [p["id"] for p in moved["items"]] == [product["id"]]


async def test_without_the_cache_every_read_comes_from_the_database(
    catalog: Catalog,
    service_client: ClientFactory,
    products_settings: Settings,
    products_client: Client,
    products_db: asyncpg.Connection,
) -> None:
    uncached = await service_client(
        create_products_app(products_settings.model_copy(update={"cache_enabled": False}))
    )
    assert CACHE not in uncached.app
    assert service_of(uncached).cache is None
    category = await catalog.category()
    made = [
        await catalog.product(price_cents=p, stock=p % 3, category_id=category["id"])
        for p in (300, 100, 200, 400)
    ]
    product = made[0]
    assert await get_json(uncached, product_path(product["id"])) == product

    await products_db.execute(
        "UPDATE products SET name = 'Direct' WHERE id = $1", uuid.UUID(product["id"])
    )

    assert (await get_json(uncached, product_path(product["id"])))["name"] == "Direct"
    await products_db.execute(
        "UPDATE products SET name = $2 WHERE id = $1", uuid.UUID(product["id"]), product["name"]
    )
    for params in (
        {"category": category["id"], "sort": "price", "limit": 2},
        {"category": category["id"], "in_stock": "true"},
        {"category": category["id"], "min_price": 150, "max_price": 350},
    ):
        expected = await get_json(products_client, PRODUCTS, **params)
        assert await get_json(uncached, PRODUCTS, **params) == expected
    inventory = await get_json(uncached, inventory_path(product["id"]))
    assert inventory["available"] == product["stock"]

"""Placing an order reads the catalog once: one batch request for all its lines."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from core.bus import InMemoryTransport
from core.testing import assert_problem, wait_for
from services.orders import Settings, create_orders_app
from services.products import Settings as ProductsSettings
from services.products import create_products_app
from tests.services.orders.conftest import issue
from tests.services.orders.helpers import ORDERS, order_body
from tests.services.products.conftest import Catalog
from tests.services.products.helpers import Client

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Counted:
    """Orders and products services, with every request the products service receives."""

    def __init__(self, products: Client, orders: Client, seen: list[str]) -> None:
        self.products = products
        self.orders = orders
        self.seen = seen


@pytest.fixture
async def counted(
    service_client: Callable[[Any], Awaitable[Client]],
    products_settings: ProductsSettings,
    orders_settings: Settings,
) -> Counted:
    seen: list[str] = []

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path}")
        return await handler(request)

    transport = InMemoryTransport()
    products_app = create_products_app(products_settings, transport=transport)
    products_app.middlewares.append(count)
    products = await service_client(products_app)
    settings = orders_settings.model_copy(
        update={"products_url": str(products.make_url("")).rstrip("/")}
    )
    orders = await service_client(create_orders_app(settings, transport=transport))
    return Counted(products, orders, seen)


@pytest.fixture
async def catalog(
    counted: Counted, orders_settings: Settings, products_db: asyncpg.Connection
) -> AsyncIterator[Catalog]:
    made = Catalog(counted.products, issue(orders_settings, ["admin"]).headers)
    yield made
    await made.cleanup(products_db)


async def test_an_order_of_many_lines_reads_the_catalog_once(
    counted: Counted,
    catalog: Catalog,
    orders_settings: Settings,
    orders_db: asyncpg.Connection,
) -> None:
    products = [await catalog.product(price_cents=100 + n, stock=5) for n in range(40)]
    customer = issue(orders_settings, ["customer"])
    counted.seen.clear()

    resp = await counted.orders.post(
        ORDERS,
        json=order_body([(p["id"], 1) for p in products]),
        headers=customer.headers,
    )

    assert resp.status == 202, await resp.text()
    placed = await resp.json()
    assert counted.seen == ["GET /api/v1/products/batch"]
    assert placed["total_cents"] == sum(100 + n for n in range(40))
    prices = {line["product_id"]: line["unit_price_cents"] for line in placed["items"]}
    assert prices == {p["id"]: p["price_cents"] for p in products}

    async def saga_done() -> bool:  # the next test's saga runner must not inherit this order
        step = await orders_db.fetchval(
            "SELECT step FROM order_sagas WHERE order_id = $1::uuid", placed["id"]
        )
        return bool(step == "done")

    await wait_for(saga_done, within=15)


async def test_unknown_products_in_the_batch_are_422(
    counted: Counted, catalog: Catalog, orders_settings: Settings, orders_db: asyncpg.Connection
) -> None:
    mug = await catalog.product(stock=5)
    ghosts = [str(uuid.uuid4()), str(uuid.uuid4())]
    before = await orders_db.fetchval("SELECT count(*) FROM order_events")
    counted.seen.clear()

    resp = await counted.orders.post(
        ORDERS,
        json=order_body([(ghosts[0], 1), (mug["id"], 1), (ghosts[1], 2)]),
        headers=issue(orders_settings, ["customer"]).headers,
    )

    problem = await assert_problem(resp, 422)
    assert [error["loc"] for error in problem["errors"]] == [
        ["body", "items", 0, "product_id"],
        ["body", "items", 2, "product_id"],
    ]
    assert counted.seen == ["GET /api/v1/products/batch"]
    assert await orders_db.fetchval("SELECT count(*) FROM order_events") == before


async def test_a_catalog_that_fails_is_503(
    service_client: Callable[[Any], Awaitable[Client]],
    orders_settings: Settings,
    orders_db: asyncpg.Connection,
) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"items": "not a list"})

    async def erroring(request: web.Request) -> web.Response:
        return web.Response(status=500)

    for handler in (broken, erroring):
        upstream = web.Application()
        upstream.router.add_get("/api/v1/products/batch", handler)
        fake = await service_client(upstream)
        settings = orders_settings.model_copy(
            update={"products_url": str(fake.make_url("")).rstrip("/")}
        )
        orders = await service_client(create_orders_app(settings, transport=InMemoryTransport()))
        before = await orders_db.fetchval("SELECT count(*) FROM order_events")
        resp = await orders.post(
            ORDERS,
            json=order_body([(str(uuid.uuid4()), 1)]),
            headers=issue(orders_settings, ["customer"]).headers,
        )
        problem = await assert_problem(resp, 503)
        assert "catalog" in problem["detail"].lower()
        assert await orders_db.fetchval("SELECT count(*) FROM order_events") == before

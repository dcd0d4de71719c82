"""A catalog that does not answer within ``products_timeout`` is a 504 (``GatewayTimeout``),
told apart from a catalog that is down or broken (503), and the order is not recorded."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from core.bus import InMemoryTransport
from core.testing import assert_problem
from services.orders import Settings, create_orders_app
from tests.services.orders.conftest import issue
from tests.services.orders.helpers import ORDERS, order_body
from tests.services.products.helpers import Client

ServiceClient = Callable[[Any], Awaitable[Client]]


@pytest.fixture
async def slow_catalog(service_client: ServiceClient) -> AsyncIterator[tuple[str, list[str]]]:
    """A real products stand-in whose batch read answers only after the test is over; yields
    its base URL and the paths it was asked for."""
    release = asyncio.Event()
    seen: list[str] = []

    async def batch(request: web.Request) -> web.Response:
        seen.append(request.path)
        await release.wait()
        return web.json_response({"items": []})

    upstream = web.Application()
    upstream.router.add_get("/api/v1/products/batch", batch)
    client = await service_client(upstream)
    yield str(client.make_url("")).rstrip("/"), seen
    release.set()


async def test_a_catalog_that_does_not_answer_in_time_is_504(
    service_client: ServiceClient,
    orders_settings: Settings,
    orders_db: asyncpg.Connection,
    slow_catalog: tuple[str, list[str]],
) -> None:
    url, seen = slow_catalog
    settings = orders_settings.model_copy(update={"products_url": url, "products_timeout": 0.3})
    orders = await service_client(create_orders_app(settings, transport=InMemoryTransport()))
    before = await orders_db.fetchval("SELECT count(*) FROM order_events")

    resp = await orders.post(
        ORDERS,
        json=order_body([(str(uuid.uuid4()), 1)]),
        headers=issue(orders_settings, ["customer"]).headers,
    )

    problem = await assert_problem(resp, 504)
    assert problem["title"] == "Gateway Timeout"
    assert "catalog" in problem["detail"].lower()
    assert "Retry-After" not in resp.headers
    assert seen == ["/api/v1/products/batch"]
    assert await orders_db.fetchval("SELECT count(*) FROM order_events") == before


async def test_the_openapi_document_declares_the_504_of_placing_an_order(
    service_client: ServiceClient, orders_settings: Settings
) -> None:
    orders = await service_client(create_orders_app(orders_settings, transport=InMemoryTransport()))
    spec = await (await orders.get("/openapi.json")).json()
    responses = spec["paths"]["/api/v1/orders"]["post"]["responses"]
    assert {"503", "504"} <= set(responses)

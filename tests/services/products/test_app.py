"""The products service's operational surface: OpenAPI, AsyncAPI, readiness, hostile input."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from openapi_spec_validator import validate

from core.testing import assert_problem, wait_for
from tests.services.products.conftest import Catalog
from tests.services.products.helpers import PRODUCTS, Client, catalog_state

API_ROUTES = {
    ("get", "/api/v1/categories"),
    ("post", "/api/v1/categories"),
    ("get", "/api/v1/categories/{category_id}"),
    ("patch", "/api/v1/categories/{category_id}"),
    ("delete", "/api/v1/categories/{category_id}"),
    ("get", "/api/v1/products"),
    ("post", "/api/v1/products"),
    ("get", "/api/v1/products/batch"),  # an addition: the orders service's price read
    ("get", "/api/v1/products/{product_id}"),
    ("patch", "/api/v1/products/{product_id}"),
    ("delete", "/api/v1/products/{product_id}"),
    ("get", "/api/v1/products/{product_id}/inventory"),
    ("put", "/api/v1/products/{product_id}/inventory"),
}


async def test_openapi_documents_every_contract_route_and_is_valid(
    products_client: Client,
) -> None:
    response = await products_client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    await asyncio.to_thread(validate, document)  # the validator reads its schemas from disk
    routes = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert routes == API_ROUTES
    listing = document["paths"]["/api/v1/products"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {
        "limit",
        "cursor",
        "category",
        "q",
        "min_price",
        "max_price",
        "in_stock",
        "sort",
    }
    create = document["paths"]["/api/v1/products"]["post"]
    assert {p["name"] for p in create["parameters"]} == {"Idempotency-Key"}
    assert set(create["responses"]) >= {"201", "401", "403", "409", "422"}
    assert create["security"] == [{"bearerAuth": []}]
    assert "security" not in document["paths"]["/api/v1/products/{product_id}"]["get"]


async def test_asyncapi_lists_what_the_service_publishes_and_consumes(
    products_client: Client,
) -> None:
    document = await (await products_client.get("/asyncapi.json")).json()
    messages = {m["name"] for m in _messages(document)}
    assert messages >= {
        "product.created",
        "product.updated",
        "product.deleted",
        "inventory.changed",
        "inventory.reserved",
        "inventory.reservation_failed",
        "inventory.released",
        "order.placed",
        "order.cancelled",
        "order.shipped",
    }
    actions = {op["action"] for op in document["operations"].values()}
    assert actions == {"send", "receive"}


def _messages(document: dict[str, Any]) -> list[dict[str, Any]]:
    return list(document["components"]["messages"].values())


async def test_readyz_reports_postgres_redis_and_the_bus(products_client: Client) -> None:
    async def ready() -> bool:
        return (await products_client.get("/readyz")).status == 200

    await wait_for(ready, within=15.0)  # not before the cache warm-up has run
    response = await products_client.get("/readyz")
    body = await response.json()
    assert body["checks"] == {
        "bus": {"status": "up"},
        "postgres": {"status": "up"},
        "redis": {"status": "up"},
    }


async def test_hostile_bodies_are_4xx_and_change_nothing(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    before = await catalog_state(products_db)
    sku = catalog.sku()
    cases: list[tuple[dict[str, Any], int]] = [
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
        ({"data": b"sku=x", "headers": {"Content-Type": "text/plain"}}, 415),
        ({"json": {"sku": sku, "name": "N\x00UL", "price_cents": 1}}, 422),
        ({"json": {"sku": sku, "name": "x", "price_cents": 1, "attributes": {"k": "\x00"}}}, 422),
        ({"json": [1, 2, 3]}, 422),
        ({"data": b"", "headers": {"Content-Type": "application/json"}}, 422),
    ]
    for kwargs, status in cases:
        headers = {**catalog.admin, **kwargs.pop("headers", {})}
        resp = await products_client.post(PRODUCTS, headers=headers, **kwargs)
        await assert_problem(resp, status)
    assert await catalog_state(products_db) == before

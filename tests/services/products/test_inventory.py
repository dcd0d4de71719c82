"""GET/PUT /products/{id}/inventory: on hand, reserved, available (API.md)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from core.testing import assert_problem
from services.products.keys import PRODUCTS_SERVICE
from tests.services.products.conftest import Catalog
from tests.services.products.helpers import (
    Client,
    catalog_state,
    inventory_path,
    inventory_row,
    outbox_events,
    product_path,
)


async def test_inventory_reads_on_hand_reserved_and_available(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    product = await catalog.product(stock=9)
    await products_client.app[PRODUCTS_SERVICE].reserve(
        catalog.order(), [(uuid.UUID(product["id"]), 4)]
    )

    resp = await products_client.get(inventory_path(product["id"]))

    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body == {"product_id": product["id"], "on_hand": 9, "reserved": 4, "available": 5}
    assert await inventory_row(products_db, product["id"]) == {
        "on_hand": 9,
        "reserved": 4,
        "available": 5,
    }
    product_body = await (await products_client.get(product_path(product["id"]))).json()
    assert product_body["stock"] == body["available"] == 5


async def test_inventory_of_an_unknown_product_is_404(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    await assert_problem(await products_client.get(inventory_path(uuid.uuid4())), 404)
    before = await catalog_state(products_db)
    await assert_problem(
        await products_client.put(
            inventory_path(uuid.uuid4()), json={"on_hand": 3}, headers=catalog.admin
        ),
        404,
    )
    assert await catalog_state(products_db) == before


async def test_put_sets_on_hand_and_publishes_inventory_changed(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    product = await catalog.product(stock=2)
    assert (await (await products_client.get(product_path(product["id"]))).json())["stock"] == 2

    resp = await products_client.put(
        inventory_path(product["id"]), json={"on_hand": 40}, headers=catalog.admin
    )

    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "product_id": product["id"],
        "on_hand": 40,
        "reserved": 0,
        "available": 40,
    }
    assert (await inventory_row(products_db, product["id"]))["on_hand"] == 40
    assert (await (await products_client.get(product_path(product["id"]))).json())["stock"] == 40
    (event,) = await outbox_events(products_db, "inventory.changed", product_id=product["id"])
    assert event["data"] == {
        "product_id": product["id"],
        "on_hand": 40,
        "reserved": 0,
        "available": 40,
        "reason": "set",
        "order_id": None,
    }
    # the same value again changes nothing and publishes nothing
    again = await products_client.put(
        inventory_path(product["id"]), json={"on_hand": 40}, headers=catalog.admin
    )
    assert again.status == 200
    assert len(await outbox_events(products_db, "inventory.changed", product_id=product["id"])) == 1


async def test_on_hand_below_reserved_is_409_and_changes_nothing(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    product = await catalog.product(stock=10)
    await products_client.app[PRODUCTS_SERVICE].reserve(
        catalog.order(), [(uuid.UUID(product["id"]), 6)]
    )
    before = await catalog_state(products_db)

    resp = await products_client.put(
        inventory_path(product["id"]), json={"on_hand": 5}, headers=catalog.admin
    )

    body = await assert_problem(resp, 409)
    assert body["type"] == "https://aioshop.dev/problems/stock-below-reserved"
    assert "6 units reserved" in body["detail"]
    assert await catalog_state(products_db) == before
    # exactly what is reserved is allowed: nothing left available
    resp = await products_client.put(
        inventory_path(product["id"]), json={"on_hand": 6}, headers=catalog.admin
    )
    assert await resp.json() == {
        "product_id": product["id"],
        "on_hand": 6,
        "reserved": 6,
        "available": 0,
    }


@pytest.mark.parametrize(
    "body",
    [{"on_hand": -1}, {"on_hand": 1.5}, {"on_hand": "3"}, {"on_hand": None}, {}, {"reserved": 1}],
    ids=str,
)
async def test_an_invalid_on_hand_is_422_and_changes_nothing(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection, body: Any
) -> None:
    product = await catalog.product(stock=3)
    before = await catalog_state(products_db)
    resp = await products_client.put(
        inventory_path(product["id"]), json=body, headers=catalog.admin
    )
    await assert_problem(resp, 422)
    assert await catalog_state(products_db) == before


async def test_a_customer_cannot_set_stock(
    catalog: Catalog,
    products_client: Client,
    products_db: asyncpg.Connection,
    customer: dict[str, str],
) -> None:
    product = await catalog.product(stock=3)
    before = await catalog_state(products_db)
    await assert_problem(
        await products_client.put(
            inventory_path(product["id"]), json={"on_hand": 99}, headers=customer
        ),
        403,
    )
    await assert_problem(
        await products_client.put(inventory_path(product["id"]), json={"on_hand": 99}), 401
    )
    assert await catalog_state(products_db) == before

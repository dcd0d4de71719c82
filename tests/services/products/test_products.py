"""Products: admin create/update/delete and public reads (API.md "Catalog and inventory")."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from core.testing import assert_problem
from services.products import api
from services.products.keys import PRODUCTS_SERVICE
from services.products.schemas import ProductOut
from tests.services.products.conftest import Catalog
from tests.services.products.helpers import (
    PRODUCT_FIELDS,
    PRODUCTS,
    Client,
    catalog_state,
    outbox_events,
    product_path,
    product_row,
)

# Reads -------------------------------------------------------------------------------------------


async def test_a_product_reads_as_stored_with_its_stock(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    category = await catalog.category("Kitchen")
    created = await catalog.product(
        name="Blue ceramic mug",
        description="Holds 350 ml of tea.",
        price_cents=1299,
        currency="EUR",
        category_id=category["id"],
        attributes={"color": "blue", "capacity_ml": 350, "tags": ["tea", "gift"]},
        stock=7,
    )

    resp = await products_client.get(product_path(created["id"]))

    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert set(body) == PRODUCT_FIELDS
    assert body == created
    row = await product_row(products_db, body["id"])
    assert row is not None
    assert (body["sku"], body["name"], body["description"]) == (
        row["sku"],
        "Blue ceramic mug",
        "Holds 350 ml of tea.",
    )
    assert (body["price_cents"], body["currency"], body["category_id"]) == (
        1299,
        "EUR",
        category["id"],
    )
    assert body["attributes"] == {"color": "blue", "capacity_ml": 350, "tags": ["tea", "gift"]}
    assert (row["on_hand"], row["reserved"], row["available"]) == (7, 0, 7)
    assert body["stock"] == row["available"] == 7
    assert body["created_at"] == body["updated_at"]
    assert body["created_at"].endswith("Z")


async def test_the_product_body_is_product_out_on_a_miss_and_on_hits(
    catalog: Catalog, products_client: Client
) -> None:
    assert api._PRODUCT_JSON_IS_PRODUCT_OUT  # the hot read sends the cached JSON as it is
    created = await catalog.product(
        name='Caf\u00e9 \u2603 "mug"',
        description="Line one.\n\tLine two.",
        attributes={"nested": {"list": [1, 2.5, None, True, "\u00e9"]}, "empty": {}},
        stock=3,
    )
    service = products_client.app[PRODUCTS_SERVICE]
    expected = ProductOut.model_validate(
        await service.catalog.get(uuid.UUID(created["id"]))
    ).model_dump_json()
    assert service.cache is not None
    assert service.cache.memory is not None
    for _ in range(2):  # computed or from Redis, then from memory
        resp = await products_client.get(product_path(created["id"]))
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert await resp.text() == expected
    service.cache.memory.clear()
    resp = await products_client.get(product_path(created["id"]))
    assert await resp.text() == expected


async def test_defaults_of_a_new_product(catalog: Catalog) -> None:
    body = await catalog.product(sku=catalog.sku(), name="Spoon", price_cents=0, stock=0)
    assert body["currency"] == "USD"
    assert body["description"] == ""
    assert body["attributes"] == {}
    assert body["category_id"] is None
    assert body["stock"] == 0
    assert body["price_cents"] == 0


async def test_an_unknown_product_is_404(products_client: Client) -> None:
    body = await assert_problem(await products_client.get(product_path(uuid.uuid4())), 404)
    assert body["detail"] == "No such product"


async def test_a_product_id_that_is_not_a_uuid_is_422(products_client: Client) -> None:
    body = await assert_problem(await products_client.get(product_path("not-a-uuid")), 422)
    assert [e["loc"] for e in body["errors"]] == [["path", "product_id"]]


# Create: failures change nothing -----------------------------------------------------------------


async def test_a_duplicate_sku_is_409_and_changes_nothing(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    first = await catalog.product(name="Original")
    before = await catalog_state(products_db)

    resp = await products_client.post(
        PRODUCTS,
        json={"sku": first["sku"], "name": "Impostor", "price_cents": 1},
        headers=catalog.admin,
    )

    body = await assert_problem(resp, 409)
    assert body["type"] == "https://aioshop.dev/problems/sku-taken"
    assert await catalog_state(products_db) == before
    unchanged = await products_client.get(product_path(first["id"]))
    assert (await unchanged.json())["name"] == "Original"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price_cents", -1),
        ("price_cents", 12.5),
        ("price_cents", "1000"),
        ("price_cents", True),
        ("price_cents", 10**13),
        ("currency", "usd"),
        ("currency", "XYZ"),
        ("currency", "US"),
        ("currency", "DOLLAR"),
        ("stock", -5),
        ("sku", "has space"),
        ("sku", ""),
        ("name", ""),
        ("category_id", "nope"),
        ("attributes", ["not", "an", "object"]),
        ("attributes", {f"k{n}": n for n in range(51)}),
        ("attributes", {"blob": "x" * 9000}),
        ("unknown_field", 1),
    ],
    ids=lambda v: str(v)[:20],
)
async def test_an_invalid_product_is_422_and_creates_nothing(
    catalog: Catalog,
    products_client: Client,
    products_db: asyncpg.Connection,
    field: str,
    value: Any,
) -> None:
    before = await catalog_state(products_db)
    body = {"sku": catalog.sku(), "name": "Bad", "price_cents": 100, field: value}

    resp = await products_client.post(PRODUCTS, json=body, headers=catalog.admin)

    problem = await assert_problem(resp, 422)
    assert ["body", field] in [e["loc"][:2] for e in problem["errors"]], problem
    assert await catalog_state(products_db) == before


async def test_a_product_needs_sku_name_and_price(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    before = await catalog_state(products_db)
    problem = await assert_problem(
        await products_client.post(PRODUCTS, json={}, headers=catalog.admin), 422
    )
    assert sorted(e["loc"][1] for e in problem["errors"]) == ["name", "price_cents", "sku"]
    assert await catalog_state(products_db) == before


async def test_an_unknown_category_is_422_and_creates_nothing(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    before = await catalog_state(products_db)
    resp = await products_client.post(
        PRODUCTS,
        json={
            "sku": catalog.sku(),
            "name": "Lost",
            "price_cents": 1,
            "category_id": str(uuid.uuid4()),
        },
        headers=catalog.admin,
    )
    problem = await assert_problem(resp, 422)
    assert [e["loc"] for e in problem["errors"]] == [["body", "category_id"]]
    assert await catalog_state(products_db) == before


# Who may write ----------------------------------------------------------------------------------


async def test_a_customer_cannot_create_update_or_delete(
    catalog: Catalog,
    products_client: Client,
    products_db: asyncpg.Connection,
    customer: dict[str, str],
) -> None:
    product = await catalog.product()
    before = await catalog_state(products_db)
    new = {"sku": catalog.sku(), "name": "Nope", "price_cents": 1}

    await assert_problem(await products_client.post(PRODUCTS, json=new, headers=customer), 403)
    await assert_problem(
        await products_client.patch(
            product_path(product["id"]), json={"name": "Hacked"}, headers=customer
        ),
        403,
    )
    await assert_problem(
        await products_client.delete(product_path(product["id"]), headers=customer), 403
    )

    assert await catalog_state(products_db) == before


async def test_anonymous_writes_are_401(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    product = await catalog.product()
    before = await catalog_state(products_db)
    new = {"sku": catalog.sku(), "name": "Nope", "price_cents": 1}

    for resp in (
        await products_client.post(PRODUCTS, json=new),
        await products_client.patch(product_path(product["id"]), json={"name": "x"}),
        await products_client.delete(product_path(product["id"])),
        await products_client.post(PRODUCTS, json=new, headers={"Authorization": "Bearer junk"}),
    ):
        await assert_problem(resp, 401)
    assert await catalog_state(products_db) == before


# Update -----------------------------------------------------------------------------------------


async def test_patch_changes_only_the_named_fields(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    kitchen = await catalog.category("Kitchen")
    product = await catalog.product(
        name="Mug", price_cents=500, category_id=kitchen["id"], attributes={"a": 1}
    )
    before = await product_row(products_db, product["id"])
    assert before is not None

    resp = await products_client.patch(
        product_path(product["id"]),
        json={"price_cents": 650, "attributes": {"a": 2}, "category_id": None},
        headers=catalog.admin,
    )

    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["price_cents"], body["attributes"], body["category_id"]) == (650, {"a": 2}, None)
    after = await product_row(products_db, product["id"])
    assert after is not None
    assert (after["price_cents"], after["category_id"]) == (650, None)
    assert after["updated_at"] > before["updated_at"]
    for unchanged in ("sku", "name", "description", "currency", "created_at", "on_hand"):
        assert after[unchanged] == before[unchanged], unchanged
    reread = await products_client.get(product_path(product["id"]))
    assert await reread.json() == body
    (event,) = await outbox_events(products_db, "product.updated", product_id=product["id"])
    assert event["data"]["changed"] == ["attributes", "category_id", "price_cents"]


async def test_a_patch_that_changes_nothing_publishes_nothing(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    product = await catalog.product(name="Same")
    before = await catalog_state(products_db)

    for patch in ({}, {"name": "Same"}):
        resp = await products_client.patch(
            product_path(product["id"]), json=patch, headers=catalog.admin
        )
        assert resp.status == 200, await resp.text()
        assert await resp.json() == product

    assert await catalog_state(products_db) == before


async def test_patching_to_a_taken_sku_is_409_and_changes_nothing(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    first, second = await catalog.product(), await catalog.product()
    before = await catalog_state(products_db)

    resp = await products_client.patch(
        product_path(second["id"]), json={"sku": first["sku"], "name": "X"}, headers=catalog.admin
    )

    await assert_problem(resp, 409)
    assert await catalog_state(products_db) == before


@pytest.mark.parametrize(
    "patch",
    [
        {"name": None},
        {"price_cents": None},
        {"price_cents": -3},
        {"currency": "eur"},
        {"sku": None},
        {"stock": 5},
        {"category_id": "00000000-0000-0000-0000-000000000000"},
    ],
    ids=str,
)
async def test_an_invalid_patch_is_422_and_changes_nothing(
    catalog: Catalog,
    products_client: Client,
    products_db: asyncpg.Connection,
    patch: dict[str, Any],
) -> None:
    product = await catalog.product()
    before = await catalog_state(products_db)

    resp = await products_client.patch(
        product_path(product["id"]), json=patch, headers=catalog.admin
    )

    problem = await assert_problem(resp, 422)
    assert [e["loc"][:2] for e in problem["errors"]] == [["body", next(iter(patch))]]
    assert await catalog_state(products_db) == before


async def test_patching_an_unknown_product_is_404(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    before = await catalog_state(products_db)
    resp = await products_client.patch(
        product_path(uuid.uuid4()), json={"name": "Ghost"}, headers=catalog.admin
    )
    await assert_problem(resp, 404)
    assert await catalog_state(products_db) == before


# Delete -----------------------------------------------------------------------------------------


async def test_delete_removes_the_product_and_its_inventory(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    product = await catalog.product()
    assert (await products_client.get(product_path(product["id"]))).status == 200

    resp = await products_client.delete(product_path(product["id"]), headers=catalog.admin)

    assert resp.status == 204
    assert await resp.read() == b""
    assert await product_row(products_db, product["id"]) is None
    assert (
        await products_db.fetchval(
            "SELECT count(*) FROM inventory WHERE product_id = $1", uuid.UUID(product["id"])
        )
        == 0
    )
    await assert_problem(await products_client.get(product_path(product["id"])), 404)
    (event,) = await outbox_events(products_db, "product.deleted", product_id=product["id"])
    assert event["data"] == {"product_id": product["id"], "sku": product["sku"]}
    # deleting again: 404, nothing more published
    await assert_problem(
        await products_client.delete(product_path(product["id"]), headers=catalog.admin), 404
    )
    assert len(await outbox_events(products_db, "product.deleted", product_id=product["id"])) == 1


async def test_a_product_with_reserved_stock_cannot_be_deleted(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    product = await catalog.product(stock=5)
    outcome = await products_client.app[PRODUCTS_SERVICE].reserve(
        catalog.order(), [(uuid.UUID(product["id"]), 2)]
    )
    assert outcome.status == "reserved"
    before = await catalog_state(products_db)

    resp = await products_client.delete(product_path(product["id"]), headers=catalog.admin)

    body = await assert_problem(resp, 409)
    assert "2 units are reserved" in body["detail"]
    assert await catalog_state(products_db) == before


# Idempotency-Key (API.md "Conventions") --------------------------------------------------------


async def test_the_same_idempotency_key_creates_one_product(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    body = {"sku": catalog.sku(), "name": "Once", "price_cents": 100}
    headers = {**catalog.admin, "Idempotency-Key": uuid.uuid4().hex}

    first = await products_client.post(PRODUCTS, json=body, headers=headers)
    second = await products_client.post(PRODUCTS, json=body, headers=headers)

    assert first.status == second.status == 201
    assert await first.json() == await second.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert (
        await products_db.fetchval("SELECT count(*) FROM products WHERE sku = $1", body["sku"]) == 1
    )
    assert len(await outbox_events(products_db, "product.created", sku=body["sku"])) == 1
    other = await products_client.post(
        PRODUCTS, json={**body, "sku": catalog.sku()}, headers=headers
    )
    await assert_problem(other, 422)

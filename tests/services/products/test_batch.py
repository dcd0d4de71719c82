"""GET /api/v1/products/batch: several products in one read, through the per-product cache."""

from __future__ import annotations

import uuid

from core.testing import assert_problem
from tests.services.products.conftest import Catalog
from tests.services.products.helpers import PRODUCTS, Client, product_path

BATCH = f"{PRODUCTS}/batch"


async def test_a_batch_answers_in_order_and_lists_the_missing(
    products_client: Client, catalog: Catalog
) -> None:
    mug = await catalog.product(price_cents=1200)
    pot = await catalog.product(price_cents=3400)
    ghost = str(uuid.uuid4())

    ids = f"{pot['id']},{ghost},{mug['id']},{pot['id'].upper()}"
    resp = await products_client.get(BATCH, params={"ids": ids})  # anonymous

    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert [item["id"] for item in body["items"]] == [pot["id"], mug["id"]]
    assert body["items"][0] == await (await products_client.get(product_path(pot["id"]))).json()
    assert body["missing"] == [ghost]
    repeated = await products_client.get(f"{BATCH}?ids={mug['id']}&ids={pot['id']}")
    assert [item["id"] for item in (await repeated.json())["items"]] == [mug["id"], pot["id"]]


async def test_a_batch_is_as_fresh_as_a_single_read(
    products_client: Client, catalog: Catalog, admin: dict[str, str]
) -> None:
    mug = await catalog.product(price_cents=1200)
    first = await (await products_client.get(BATCH, params={"ids": mug["id"]})).json()
    assert first["items"][0]["price_cents"] == 1200

    patched = await products_client.patch(
        product_path(mug["id"]), json={"price_cents": 1500}, headers=admin
    )
    assert patched.status == 200
    after = await (await products_client.get(BATCH, params={"ids": mug["id"]})).json()
    assert after["items"][0]["price_cents"] == 1500

    deleted = await products_client.delete(product_path(mug["id"]), headers=admin)
    assert deleted.status == 204
    gone = await (await products_client.get(BATCH, params={"ids": mug["id"]})).json()
    assert gone == {"items": [], "missing": [mug["id"]]}


async def test_bad_batches_are_422(products_client: Client) -> None:
    too_many = ",".join(str(uuid.uuid4()) for _ in range(101))
    for params, loc in (
        ({"ids": too_many}, ["query", "ids"]),
        ({"ids": f"{uuid.uuid4()},nope"}, ["query", "ids", 1]),
        ({"ids": ""}, ["query", "ids", 0]),
        ({}, ["query", "ids"]),
    ):
        problem = await assert_problem(await products_client.get(BATCH, params=params), 422)
        assert [error["loc"] for error in problem["errors"]] == [loc], params
    hundred = ",".join(str(uuid.uuid4()) for _ in range(100))
    assert (await products_client.get(BATCH, params={"ids": hundred})).status == 200


async def test_the_batch_route_is_documented(products_client: Client) -> None:
    spec = await (await products_client.get("/openapi.json")).json()
    operation = spec["paths"]["/api/v1/products/batch"]["get"]
    assert [p["name"] for p in operation["parameters"]] == ["ids"]
    assert "security" not in operation or operation["security"] in ([], [{}])

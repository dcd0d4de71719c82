"""Categories: a tree by ``parent_id`` with unique slugs (API.md "Catalog and inventory")."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from core.testing import assert_problem
from tests.services.products.conftest import Catalog
from tests.services.products.helpers import (
    CATEGORIES,
    Client,
    catalog_state,
    category_path,
)


async def list_all(client: Client, *, limit: int) -> list[dict[str, Any]]:
    """Every category, following next_cursor to the end."""
    items: list[dict[str, Any]] = []
    params: dict[str, str | int] = {"limit": limit}
    while True:
        resp = await client.get(CATEGORIES, params=params)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert len(body["items"]) <= limit
        items += body["items"]
        if body["next_cursor"] is None:
            return items
        params = {"limit": limit, "cursor": body["next_cursor"]}


async def test_create_and_list_categories_as_a_tree(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    slug = catalog.slug("kitchen")
    resp = await products_client.post(
        CATEGORIES, json={"name": "Kitchen", "slug": slug}, headers=catalog.admin
    )
    assert resp.status == 201, await resp.text()
    kitchen = await resp.json()
    assert set(kitchen) == {"id", "name", "slug", "parent_id"}
    assert (kitchen["name"], kitchen["slug"], kitchen["parent_id"]) == ("Kitchen", slug, None)
    mugs = await catalog.category("Mugs", parent_id=kitchen["id"])
    assert mugs["parent_id"] == kitchen["id"]
    row = await products_db.fetchrow(
        "SELECT name, slug, parent_id FROM categories WHERE id = $1", uuid.UUID(mugs["id"])
    )
    assert row is not None
    assert str(row["parent_id"]) == kitchen["id"]

    listed = await list_all(products_client, limit=3)

    mine = [c for c in listed if c["slug"].startswith(catalog.prefix)]
    assert mine == sorted([kitchen, mugs], key=lambda c: c["slug"])
    slugs = [c["slug"] for c in listed]
    assert slugs == sorted(slugs)
    assert len(set(slugs)) == len(slugs)
    one = await products_client.get(category_path(mugs["id"]))
    assert await one.json() == mugs


async def test_a_new_category_shows_in_the_cached_list_at_once(
    catalog: Catalog, products_client: Client
) -> None:
    before = await list_all(products_client, limit=100)
    created = await catalog.category("Fresh")
    after = await list_all(products_client, limit=100)
    assert created in after
    assert len(after) == len(before) + 1


async def test_a_duplicate_slug_is_409_and_changes_nothing(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    first = await catalog.category("First")
    before = await catalog_state(products_db)

    resp = await products_client.post(
        CATEGORIES, json={"name": "Second", "slug": first["slug"]}, headers=catalog.admin
    )

    body = await assert_problem(resp, 409)
    assert body["type"] == "https://aioshop.dev/problems/slug-taken"
    assert await catalog_state(products_db) == before


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Bad", "slug": "Has Capitals"},
        {"name": "Bad", "slug": "trailing-"},
        {"name": "Bad", "slug": ""},
        {"name": "", "slug": "fine"},
        {"name": "Bad", "slug": "fine", "parent_id": "nope"},
        {"name": "Bad"},
    ],
    ids=str,
)
async def test_an_invalid_category_is_422(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection, body: dict[str, Any]
) -> None:
    before = await catalog_state(products_db)
    await assert_problem(
        await products_client.post(CATEGORIES, json=body, headers=catalog.admin), 422
    )
    assert await catalog_state(products_db) == before


async def test_an_unknown_parent_is_422(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    before = await catalog_state(products_db)
    resp = await products_client.post(
        CATEGORIES,
        json={"name": "Orphan", "slug": catalog.slug(), "parent_id": str(uuid.uuid4())},
        headers=catalog.admin,
    )
    body = await assert_problem(resp, 422)
    assert [e["loc"] for e in body["errors"]] == [["body", "parent_id"]]
    assert await catalog_state(products_db) == before


async def test_customers_and_strangers_cannot_write_categories(
    catalog: Catalog,
    products_client: Client,
    products_db: asyncpg.Connection,
    customer: dict[str, str],
) -> None:
    category = await catalog.category()
    before = await catalog_state(products_db)
    new = {"name": "Nope", "slug": catalog.slug()}

    await assert_problem(await products_client.post(CATEGORIES, json=new, headers=customer), 403)
    await assert_problem(await products_client.post(CATEGORIES, json=new), 401)
    await assert_problem(
        await products_client.patch(
            category_path(category["id"]), json={"name": "x"}, headers=customer
        ),
        403,
    )
    await assert_problem(
        await products_client.delete(category_path(category["id"]), headers=customer), 403
    )
    assert await catalog_state(products_db) == before


async def test_an_unknown_category_is_404(products_client: Client, catalog: Catalog) -> None:
    await assert_problem(await products_client.get(category_path(uuid.uuid4())), 404)
    await assert_problem(
        await products_client.patch(
            category_path(uuid.uuid4()), json={"name": "x"}, headers=catalog.admin
        ),
        404,
    )
    await assert_problem(
        await products_client.delete(category_path(uuid.uuid4()), headers=catalog.admin), 404
    )


async def test_rename_and_move_a_category(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    home, garden = await catalog.category("Home"), await catalog.category("Garden")
    lamps = await catalog.category("Lamps", parent_id=home["id"])

    resp = await products_client.patch(
        category_path(lamps["id"]),
        json={"name": "Outdoor lamps", "parent_id": garden["id"]},
        headers=catalog.admin,
    )

    assert resp.status == 200, await resp.text()
    moved = await resp.json()
    assert moved == {**lamps, "name": "Outdoor lamps", "parent_id": garden["id"]}
    assert await (await products_client.get(category_path(lamps["id"]))).json() == moved
    to_top = await products_client.patch(
        category_path(lamps["id"]), json={"parent_id": None}, headers=catalog.admin
    )
    assert (await to_top.json())["parent_id"] is None
    assert (
        await products_db.fetchval(
            "SELECT parent_id FROM categories WHERE id = $1", uuid.UUID(lamps["id"])
        )
        is None
    )


async def test_a_move_under_its_own_subtree_is_409(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    top = await catalog.category("Top")
    middle = await catalog.category("Middle", parent_id=top["id"])
    bottom = await catalog.category("Bottom", parent_id=middle["id"])
    before = await catalog_state(products_db)

    for target in (bottom, middle, top):
        resp = await products_client.patch(
            category_path(top["id"]), json={"parent_id": target["id"]}, headers=catalog.admin
        )
        body = await assert_problem(resp, 409)
        assert body["type"] == "https://aioshop.dev/problems/category-cycle"
    assert await catalog_state(products_db) == before


async def test_a_category_in_use_cannot_be_deleted(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    parent = await catalog.category("Parent")
    child = await catalog.category("Child", parent_id=parent["id"])
    product = await catalog.product(category_id=child["id"])
    before = await catalog_state(products_db)

    for category in (parent, child):
        resp = await products_client.delete(category_path(category["id"]), headers=catalog.admin)
        body = await assert_problem(resp, 409)
        assert body["type"] == "https://aioshop.dev/problems/category-in-use"
    assert await catalog_state(products_db) == before

    await products_client.delete(f"/api/v1/products/{product['id']}", headers=catalog.admin)
    for category in (child, parent):
        resp = await products_client.delete(category_path(category["id"]), headers=catalog.admin)
        assert resp.status == 204
        await assert_problem(await products_client.get(category_path(category["id"])), 404)


@pytest.mark.parametrize("limit", [0, 101, -1, "x"])
async def test_a_category_page_size_outside_1_to_100_is_422(
    products_client: Client, limit: object
) -> None:
    body = await assert_problem(
        await products_client.get(CATEGORIES, params={"limit": str(limit)}), 422
    )
    assert [e["loc"] for e in body["errors"]] == [["query", "limit"]]


@pytest.mark.parametrize("cursor", ["garbage!", "WzEsMl0", "W10"])
async def test_a_bad_category_cursor_is_422(products_client: Client, cursor: str) -> None:
    body = await assert_problem(
        await products_client.get(CATEGORIES, params={"cursor": cursor}), 422
    )
    assert [e["loc"] for e in body["errors"]] == [["query", "cursor"]]

"""GET /products: keyset pagination, filters, sorts and full-text search (API.md)."""

from __future__ import annotations

import asyncio
import base64
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from core.testing import assert_problem
from tests.services.products.conftest import Catalog
from tests.services.products.helpers import PRODUCTS, Client, inventory_path

SORTS = ["price", "-price", "name", "-created_at"]


def cursor_of(*values: Any) -> str:
    """A well-formed cursor holding ``values`` (but not one the API issued)."""
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode("ascii").rstrip("=")


async def page(client: Client, **params: Any) -> dict[str, Any]:
    """One page of GET /products (which must succeed)."""
    query = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()}
    resp = await client.get(PRODUCTS, params=query)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert set(body) == {"items", "next_cursor"}
    return body


async def every_page(client: Client, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page, following next_cursor to the end."""
    pages = []
    cursor = None
    while True:
        body = await page(client, **params, **({"cursor": cursor} if cursor else {}))
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def ids(items: list[dict[str, Any]]) -> list[str]:
    """The ids of listed products, in order."""
    return [item["id"] for item in items]


def expected_order(products: list[dict[str, Any]], sort: str) -> list[str]:
    """The ids of ``products`` in the order ``sort`` promises (ties by id, same direction)."""
    key = {"price": "price_cents", "-price": "price_cents", "name": "name"}.get(sort, "created_at")
    descending = sort.startswith("-")

    def sort_key(p: dict[str, Any]) -> tuple[Any, uuid.UUID]:
        return (p[key], uuid.UUID(p["id"]))

    return [p["id"] for p in sorted(products, key=sort_key, reverse=descending)]


# Filters ---------------------------------------------------------------------------------------


async def test_a_category_includes_its_sub_categories(
    catalog: Catalog, products_client: Client
) -> None:
    top = await catalog.category("Home")
    middle = await catalog.category("Kitchen", parent_id=top["id"])
    bottom = await catalog.category("Mugs", parent_id=middle["id"])
    other = await catalog.category("Garden")
    made = {
        name: await catalog.product(name=name, category_id=category["id"])
        for name, category in (
            ("top", top),
            ("middle", middle),
            ("bottom", bottom),
            ("other", other),
        )
    }

    async def listed(category: dict[str, Any]) -> set[str]:
        return {p["name"] for p in (await page(products_client, category=category["id"]))["items"]}

    assert await listed(top) == {"top", "middle", "bottom"}
    assert await listed(middle) == {"middle", "bottom"}
    assert await listed(bottom) == {"bottom"}
    assert await listed(other) == {"other"}
    assert (await page(products_client, category=uuid.uuid4()))["items"] == []
    assert made["top"]["id"] in ids((await page(products_client, limit=100))["items"])


async def test_min_and_max_price_bound_the_listing(
    catalog: Catalog, products_client: Client
) -> None:
    category = await catalog.category()
    prices = [0, 100, 500, 999, 1000, 5000]
    for price in prices:
        await catalog.product(price_cents=price, category_id=category["id"])

    async def listed(**bounds: int) -> list[int]:
        body = await page(products_client, category=category["id"], sort="price", **bounds)
        return [p["price_cents"] for p in body["items"]]

    assert await listed() == prices
    assert await listed(min_price=500) == [500, 999, 1000, 5000]
    assert await listed(max_price=999) == [0, 100, 500, 999]
    assert await listed(min_price=100, max_price=1000) == [100, 500, 999, 1000]
    assert await listed(min_price=1000, max_price=1000) == [1000]
    assert await listed(min_price=5001) == []


async def test_in_stock_lists_what_is_available_and_false_what_is_sold_out(
    catalog: Catalog, products_client: Client
) -> None:
    category = await catalog.category()
    plenty = await catalog.product(name="plenty", stock=5, category_id=category["id"])
    none = await catalog.product(name="none", stock=0, category_id=category["id"])
    spoken_for = await catalog.product(name="spoken for", stock=2, category_id=category["id"])
    from services.products.keys import PRODUCTS_SERVICE

    service = products_client.app[PRODUCTS_SERVICE]
    outcome = await service.reserve(catalog.order(), [(uuid.UUID(spoken_for["id"]), 2)])
    assert outcome.status == "reserved"

    async def names(**params: Any) -> set[str]:
        body = await page(products_client, category=category["id"], **params)
        return {p["name"] for p in body["items"]}

    assert await names(in_stock=True) == {"plenty"}
    assert await names(in_stock=False) == {"none", "spoken for"}
    assert await names() == {"plenty", "none", "spoken for"}
    # stock changes move products between the two lists (through the cache, at once)
    resp = await products_client.put(
        inventory_path(none["id"]), json={"on_hand": 3}, headers=catalog.admin
    )
    assert resp.status == 200
    await service.release(next(iter(catalog.orders)))
    assert await names(in_stock=True) == {"plenty", "none", "spoken for"}
    resp = await products_client.put(
        inventory_path(plenty["id"]), json={"on_hand": 0}, headers=catalog.admin
    )
    assert await names(in_stock=False) == {"plenty"}


async def test_filters_combine(catalog: Catalog, products_client: Client) -> None:
    category = await catalog.category()
    word = f"zq{uuid.uuid4().hex[:8]}"
    await catalog.product(name=f"{word} cheap", price_cents=100, category_id=category["id"])
    await catalog.product(name=f"{word} dear", price_cents=9000, category_id=category["id"])
    await catalog.product(
        name=f"{word} sold out", price_cents=200, stock=0, category_id=category["id"]
    )
    await catalog.product(name=f"{word} elsewhere", price_cents=150)

    body = await page(
        products_client,
        q=word,
        category=category["id"],
        max_price=1000,
        in_stock=True,
        sort="price",
    )

    assert [p["name"] for p in body["items"]] == [f"{word} cheap"]


# Sorts -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sort", [*SORTS, None])
async def test_each_sort_orders_with_ties_broken_by_id(
    catalog: Catalog, products_client: Client, sort: str | None
) -> None:
    category = await catalog.category()
    made = []
    for n in range(9):  # repeated prices and names: ties that only the id can order
        made.append(
            await catalog.product(
                name=f"Item {n % 3}", price_cents=100 * (n % 4), category_id=category["id"]
            )
        )
    params: dict[str, Any] = {"category": category["id"], "limit": 4}
    if sort is not None:
        params["sort"] = sort

    listed = [item for items in await every_page(products_client, **params) for item in items]

    assert ids(listed) == expected_order(made, sort or "-created_at")


# Full-text search --------------------------------------------------------------------------------


async def test_q_matches_words_in_names_and_descriptions_best_first(
    catalog: Catalog, products_client: Client
) -> None:
    word = f"zq{uuid.uuid4().hex[:8]}"
    in_name = await catalog.product(name=f"Walnut {word} lamp", description="A lamp.")
    in_description = await catalog.product(
        name="Oak lamp", description=f"Pairs with any {word} decor."
    )
    twice = await catalog.product(
        name=f"{word} lamp shade", description=f"The {word} shade for lamps."
    )
    await catalog.product(name="Unrelated teapot", description="Nothing to see.")

    ranked = ids((await page(products_client, q=word))["items"])
    assert set(ranked) == {in_name["id"], in_description["id"], twice["id"]}
    assert ranked.index(in_description["id"]) == 2  # a description match weighs least

    # web search syntax, stemming (lamps -> lamp), and AND by default
    assert ids((await page(products_client, q=f"{word} lamps walnut"))["items"]) == [in_name["id"]]
    assert ids((await page(products_client, q=f'"{word} lamp shade"'))["items"]) == [twice["id"]]
    both = ids((await page(products_client, q=f"{word} -walnut"))["items"])
    assert set(both) == {in_description["id"], twice["id"]}
    assert (await page(products_client, q=f"{word} nosuchwordanywhere"))["items"] == []
    assert (await page(products_client, q="the"))["items"] == []  # only a stop word
    by_price = await page(products_client, q=word, sort="price")
    assert len(by_price["items"]) == 3


async def test_relevance_pages_follow_the_cursor(catalog: Catalog, products_client: Client) -> None:
    word = f"zq{uuid.uuid4().hex[:8]}"
    made = set()
    for n in range(7):
        body = await catalog.product(
            name=f"{word} " + "lamp " * (n % 3), description=f"{word} " * (n % 4)
        )
        made.add(body["id"])

    pages = await every_page(products_client, q=word, limit=3)

    assert [len(items) for items in pages] == [3, 3, 1]
    listed = [item["id"] for items in pages for item in items]
    assert sorted(listed) == sorted(made)
    assert listed == ids((await page(products_client, q=word, limit=100))["items"])


# Pagination and its failures ---------------------------------------------------------------------


async def test_pages_cover_the_listing_once_and_end_with_a_null_cursor(
    catalog: Catalog, products_client: Client
) -> None:
    category = await catalog.category()
    made = [await catalog.product(category_id=category["id"]) for _ in range(25)]

    pages = await every_page(products_client, category=category["id"], limit=10)

    assert [len(items) for items in pages] == [10, 10, 5]
    assert [i for items in pages for i in ids(items)] == expected_order(made, "-created_at")
    default = await page(products_client, category=category["id"])
    assert len(default["items"]) == 20  # the default page size


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"sort": "popularity"}, "sort"),
        ({"sort": "-name"}, "sort"),
        ({"cursor": "not a cursor!"}, "cursor"),
        ({"cursor": cursor_of("price", 100)}, "cursor"),
        ({"cursor": cursor_of("price", "100", str(uuid.uuid4())), "sort": "price"}, "cursor"),
        ({"cursor": cursor_of("price", True, str(uuid.uuid4())), "sort": "price"}, "cursor"),
        ({"cursor": cursor_of("price", 100, "not-a-uuid"), "sort": "price"}, "cursor"),
        ({"cursor": cursor_of("-created_at", "yesterday", str(uuid.uuid4()))}, "cursor"),
        ({"cursor": cursor_of("-created_at", "2025-01-01T00:00:00", str(uuid.uuid4()))}, "cursor"),
        ({"cursor": cursor_of("name", 5, str(uuid.uuid4())), "sort": "name"}, "cursor"),
        ({"cursor": cursor_of("rank", "high", str(uuid.uuid4())), "q": "lamp"}, "cursor"),
        ({"cursor": "x" * 600}, "cursor"),
        ({"min_price": "-1"}, "min_price"),
        ({"max_price": "1.5"}, "max_price"),
        ({"min_price": "500", "max_price": "100"}, "max_price"),
        ({"in_stock": "maybe"}, "in_stock"),
        ({"category": "kitchen"}, "category"),
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "w" * 201}, "q"),
    ],
    ids=lambda v: str(v)[:40],
)
async def test_bad_listing_parameters_are_422(
    products_client: Client, params: dict[str, str], loc: str
) -> None:
    body = await assert_problem(await products_client.get(PRODUCTS, params=params), 422)
    assert ["query", loc] in [e["loc"] for e in body["errors"]], body


async def test_a_cursor_of_one_sort_is_refused_by_another(
    catalog: Catalog, products_client: Client
) -> None:
    category = await catalog.category()
    for _ in range(3):
        await catalog.product(category_id=category["id"])
    by_price = await page(products_client, category=category["id"], sort="price", limit=1)
    cursor = by_price["next_cursor"]
    assert cursor is not None

    resp = await products_client.get(
        PRODUCTS, params={"category": category["id"], "sort": "name", "cursor": cursor}
    )

    body = await assert_problem(resp, 422)
    assert [e["loc"] for e in body["errors"]] == [["query", "cursor"]]


# Stable under concurrent inserts -----------------------------------------------------------------


async def insert_products(
    db: asyncpg.Connection, catalog: Catalog, category_id: str, count: int
) -> list[str]:
    """``count`` products straight into the database (with ties in price, name and time)."""
    rng = random.Random(7)
    base = datetime(2025, 6, 1, tzinfo=UTC)
    rows, stock = [], []
    for n in range(count):
        product_id = uuid.uuid4()
        created = base + timedelta(seconds=n // 3)  # three products per timestamp
        rows.append(
            (
                product_id,
                catalog.sku("bulk"),
                f"Bulk item {rng.randrange(200)}",
                "",
                rng.randrange(50) * 100,
                "USD",
                uuid.UUID(category_id),
                "{}",
                created,
                created,
            )
        )
        stock.append((product_id, rng.randrange(3)))
    columns = [
        "id",
        "sku",
        "name",
        "description",
        "price_cents",
        "currency",
        "category_id",
        "attributes",
        "created_at",
        "updated_at",
    ]
    await db.copy_records_to_table("products", records=rows, columns=columns)
    await db.copy_records_to_table("inventory", records=stock, columns=["product_id", "on_hand"])
    return [str(row[0]) for row in rows]


@pytest.mark.parametrize("sort", SORTS)
async def test_pagination_over_1000_products_with_concurrent_inserts_lists_each_once(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection, sort: str
) -> None:
    category = await catalog.category()
    existing = set(await insert_products(products_db, catalog, category["id"], 1000))
    rng = random.Random(11)
    inserted: list[str] = []

    async def insert_some() -> None:
        for _ in range(4):  # prices and names on both sides of any page boundary
            body = await catalog.product(
                name=f"Bulk item {rng.randrange(200)}",
                price_cents=rng.randrange(50) * 100,
                category_id=category["id"],
            )
            inserted.append(body["id"])

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"category": category["id"], "sort": sort, "limit": 100}
        if cursor is not None:
            params["cursor"] = cursor
        body, _ = await asyncio.gather(page(products_client, **params), insert_some())
        seen += ids(body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert pages >= 10
    assert len(inserted) == 4 * pages
    assert len(seen) == len(set(seen)), "a product was listed twice"
    assert existing <= set(seen), f"{len(existing - set(seen))} pre-existing products missed"
    assert set(seen) <= existing | set(inserted)
    # the listing order held across every page boundary
    listed = {p: i for i, p in enumerate(seen)}
    rows = await products_db.fetch(
        "SELECT id, price_cents, name, created_at FROM products WHERE id = ANY ($1::uuid[])",
        [uuid.UUID(p) for p in seen],
    )
    products = [
        {
            "id": str(r["id"]),
            "price_cents": r["price_cents"],
            "name": r["name"],
            "created_at": r["created_at"],
        }
        for r in rows
    ]
    assert expected_order(products, sort) == sorted(seen, key=listed.__getitem__)

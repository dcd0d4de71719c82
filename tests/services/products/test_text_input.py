"""Text input end to end: control characters refused (422, nothing stored), NFC stored."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.services.products.conftest import Catalog
from tests.services.products.helpers import PRODUCTS, Client


async def test_control_characters_are_refused_and_nothing_is_created(
    products_client: Client,
    catalog: Catalog,
    admin: dict[str, str],
    products_db: asyncpg.Connection,
) -> None:
    sku = catalog.sku()
    bad: list[tuple[dict[str, Any], list[str]]] = [
        ({"name": "Mug\x1b[31m"}, ["body", "name"]),
        ({"name": "Mug", "description": "ok\r\nnot ok"}, ["body", "description"]),
        ({"name": "Mug", "attributes": {"colour": ["red", "bl\x85ue"]}}, ["body", "attributes"]),
        ({"name": "Mug", "attributes": {"col\x07our": "red"}}, ["body", "attributes"]),
    ]
    for fields, loc in bad:
        resp = await products_client.post(
            PRODUCTS, json={"sku": sku, "price_cents": 100, **fields}, headers=admin
        )
        assert resp.status == 422, fields
        assert resp.content_type == "application/problem+json"
        (error,) = (await resp.json())["errors"]
        assert error["loc"] == loc
        assert error["type"] == "string_control_character"
    assert await products_db.fetchval("SELECT count(*) FROM products WHERE sku = $1", sku) == 0

    query = await products_client.get(PRODUCTS, params={"q": "mug\x1b"})
    assert query.status == 422
    assert (await query.json())["errors"][0]["loc"] == ["query", "q"]


async def test_text_is_stored_nfc_normalized_and_descriptions_keep_newlines(
    catalog: Catalog, products_db: asyncpg.Connection
) -> None:
    product = await catalog.product(
        name="Cafe\u0301 mug",
        description="Line one\n\tLine two",
        attributes={"Cafe\u0301": "cre\u0300me"},
    )
    assert product["name"] == "Caf\u00e9 mug"
    assert product["description"] == "Line one\n\tLine two"
    assert product["attributes"] == {"Caf\u00e9": "cr\u00e8me"}
    stored = await products_db.fetchval(
        "SELECT name FROM products WHERE id = $1::uuid", product["id"]
    )
    assert stored == "Caf\u00e9 mug"

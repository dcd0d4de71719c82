"""Cached category pages: a cursor holding ``"None"`` is no copy of page one."""

from __future__ import annotations

import asyncpg

from core.pagination import encode_cursor
from services.products.keys import PRODUCTS_SERVICE
from tests.services.products.conftest import Catalog
from tests.services.products.helpers import CATEGORIES, Client


async def test_a_none_cursor_does_not_collide_with_page_one(
    products_client: Client,
    catalog: Catalog,
    admin: dict[str, str],
    products_db: asyncpg.Connection,
) -> None:
    # Digits sort before "None": page one has this slug, a page after "None" would not.
    slug = f"0-{catalog.prefix}-first"
    made = await products_client.post(
        CATEGORIES, json={"name": "First", "slug": slug}, headers=admin
    )
    assert made.status == 201, await made.text()
    try:
        forged = await products_client.get(
            CATEGORIES, params={"limit": 100, "cursor": encode_cursor("None")}
        )
        assert forged.status == 422
        assert (await forged.json())["errors"][0]["loc"] == ["query", "cursor"]
        page_one = await products_client.get(CATEGORIES, params={"limit": 100})
        assert page_one.status == 200
        assert slug in [item["slug"] for item in (await page_one.json())["items"]]

        # Below the API too: the cached reads of after=None and after="None" are two entries.
        service = products_client.app[PRODUCTS_SERVICE]
        after_none_text = await service.catalog._cached_categories(100, "None")
        first = await service.catalog._cached_categories(100, None)
        assert slug not in [c.slug for c in after_none_text.items]
        assert slug in [c.slug for c in first.items]
    finally:
        await products_db.execute("DELETE FROM categories WHERE slug = $1", slug)

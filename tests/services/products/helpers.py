"""Helpers of the products service tests: paths, and what the database holds."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]

PRODUCTS = "/api/v1/products"
CATEGORIES = "/api/v1/categories"

PRODUCT_FIELDS = {
    "id",
    "sku",
    "name",
    "description",
    "price_cents",
    "currency",
    "category_id",
    "attributes",
    "stock",
    "created_at",
    "updated_at",
}


def product_path(product_id: str | uuid.UUID) -> str:
    """The URL of a product."""
    return f"{PRODUCTS}/{product_id}"


def inventory_path(product_id: str | uuid.UUID) -> str:
    """The URL of a product's inventory."""
    return f"{PRODUCTS}/{product_id}/inventory"


def category_path(category_id: str | uuid.UUID) -> str:
    """The URL of a category."""
    return f"{CATEGORIES}/{category_id}"


async def product_row(db: asyncpg.Connection, product_id: str | uuid.UUID) -> dict[str, Any] | None:
    """The stored product (without its search vector) and its inventory, or ``None``."""
    row = await db.fetchrow(
        """
        SELECT p.id, p.sku, p.name, p.description, p.price_cents, p.currency, p.category_id,
               p.attributes, p.created_at, p.updated_at,
               i.on_hand, i.reserved, i.available, i.updated_at AS inventory_updated_at
          FROM products p LEFT JOIN inventory i ON i.product_id = p.id
         WHERE p.id = $1
        """,
        uuid.UUID(str(product_id)),
    )
    return dict(row) if row is not None else None


async def inventory_row(db: asyncpg.Connection, product_id: str | uuid.UUID) -> dict[str, Any]:
    """The stored inventory of an existing product."""
    row = await db.fetchrow(
        "SELECT on_hand, reserved, available FROM inventory WHERE product_id = $1",
        uuid.UUID(str(product_id)),
    )
    assert row is not None, product_id
    return dict(row)


async def catalog_state(db: asyncpg.Connection) -> dict[str, Any]:
    """Everything the catalog holds, for requests that must change nothing at all."""
    return {
        "products": [
            dict(r)
            for r in await db.fetch(
                """
                SELECT id, sku, name, description, price_cents, currency, category_id,
                       attributes, created_at, updated_at
                  FROM products ORDER BY id
                """
            )
        ],
        "inventory": [
            dict(r) for r in await db.fetch("SELECT * FROM inventory ORDER BY product_id")
        ],
        "categories": [dict(r) for r in await db.fetch("SELECT * FROM categories ORDER BY id")],
        "reservations": [
            dict(r) for r in await db.fetch("SELECT * FROM reservations ORDER BY order_id")
        ],
        "lines": [
            dict(r)
            for r in await db.fetch("SELECT * FROM reservation_lines ORDER BY order_id, product_id")
        ],
        "outbox": await db.fetchval("SELECT count(*) FROM outbox"),
    }


async def outbox_events(
    db: asyncpg.Connection, event_type: str, **match: Any
) -> list[dict[str, Any]]:
    """The envelopes of ``event_type`` in the outbox, oldest first, whose data has the values
    in ``match`` (ids compare as strings)."""
    rows = await db.fetch(
        """
        SELECT envelope::text AS envelope FROM outbox
         WHERE routing_key = $1 ORDER BY created_at, id
        """,
        event_type,
    )
    wanted = {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in match.items()}
    envelopes = [orjson.loads(row["envelope"]) for row in rows]
    return [e for e in envelopes if all(e["data"].get(k) == v for k, v in wanted.items())]

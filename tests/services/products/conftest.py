"""Fixtures of the products service tests (on top of tests/conftest.py).

Tokens are issued here with the development key pair: the products service only verifies them.
Every SKU and slug a test creates starts with the test's own prefix, so that the ``catalog``
factory deletes exactly what the test made, whatever route made it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from core import token_codec
from services.products import Settings, create_products_app
from services.users.roles import permissions_of
from tests.services.products.helpers import CATEGORIES, PRODUCTS, Client


def _token(settings: Settings, roles: list[str]) -> str:
    codec = token_codec(settings, signing=True)
    issued = codec.issue(
        "access",
        user_id=str(uuid.uuid4()),
        roles=roles,
        permissions=permissions_of(roles),
        family=str(uuid.uuid4()),
    )
    return issued.token


@pytest.fixture
def admin(products_settings: Settings) -> dict[str, str]:
    """The Authorization header of an admin."""
    return {"Authorization": f"Bearer {_token(products_settings, ['admin', 'customer'])}"}


@pytest.fixture
def customer(products_settings: Settings) -> dict[str, str]:
    """The Authorization header of a customer."""
    return {"Authorization": f"Bearer {_token(products_settings, ['customer'])}"}


@pytest.fixture
async def products_client(
    service_client: Callable[[Any], Awaitable[Client]], products_settings: Settings
) -> Client:
    """A client of a running products service."""
    return await service_client(create_products_app(products_settings))


class Catalog:
    """Makes categories and products through the API (as an admin) with this test's prefix."""

    def __init__(self, client: Client, admin: dict[str, str]) -> None:
        self.client = client
        self.admin = admin
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self.orders: set[uuid.UUID] = set()
        self._n = 0

    def _next(self) -> int:
        self._n += 1
        return self._n

    def sku(self, label: str = "sku") -> str:
        """A SKU no other test uses (deleted with the test's products)."""
        return f"{self.prefix}-{label}-{self._next()}"

    def slug(self, label: str = "cat") -> str:
        """A slug no other test uses (deleted with the test's categories)."""
        return f"{self.prefix}-{label}-{self._next()}"

    def order(self) -> uuid.UUID:
        """A new order id; its reservation is deleted after the test."""
        order_id = uuid.uuid4()
        self.orders.add(order_id)
        return order_id

    async def category(
        self, name: str = "Category", *, parent_id: str | None = None
    ) -> dict[str, Any]:
        """Create a category; its response body."""
        resp = await self.client.post(
            CATEGORIES,
            json={"name": name, "slug": self.slug(), "parent_id": parent_id},
            headers=self.admin,
        )
        assert resp.status == 201, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    async def product(self, **fields: Any) -> dict[str, Any]:
        """Create a product (defaults for whatever is not given); its response body."""
        body = {"sku": self.sku(), "name": "Plain mug", "price_cents": 1000, "stock": 10}
        body.update(fields)
        resp = await self.client.post(PRODUCTS, json=body, headers=self.admin)
        assert resp.status == 201, await resp.text()
        product: dict[str, Any] = await resp.json()
        return product

    async def cleanup(self, db: asyncpg.Connection) -> None:
        """Delete the test's reservations, products (with inventory) and categories."""
        pattern = f"{self.prefix}-%"
        await db.execute(
            """
            DELETE FROM reservations
             WHERE order_id = ANY ($1::uuid[])
                OR order_id IN (SELECT l.order_id FROM reservation_lines l
                                  JOIN products p ON p.id = l.product_id
                                 WHERE p.sku LIKE $2)
            """,
            list(self.orders),
            pattern,
        )
        await db.execute("DELETE FROM products WHERE sku LIKE $1", pattern)
        while await db.fetchval("SELECT count(*) FROM categories WHERE slug LIKE $1", pattern):
            await db.execute(
                """
                DELETE FROM categories c WHERE c.slug LIKE $1
                   AND NOT EXISTS (SELECT 1 FROM categories k WHERE k.parent_id = c.id)
                """,
                pattern,
            )


@pytest.fixture
async def catalog(
    products_client: Client, admin: dict[str, str], products_db: asyncpg.Connection
) -> AsyncIterator[Catalog]:
    """A ``Catalog`` of this test; all it (or the test, with its SKUs and slugs) created is
    deleted afterwards."""
    made = Catalog(products_client, admin)
    yield made
    await made.cleanup(products_db)

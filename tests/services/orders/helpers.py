"""Helpers of the orders service tests: users, the shop of a test, waiting for outcomes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from core.testing import wait_for
from tests.services.products.conftest import Catalog
from tests.services.products.helpers import Client, inventory_row

ORDERS = "/api/v1/orders"
ADDRESS = {"name": "Ada Lovelace", "line1": "12 St James's Square", "city": "London"}
FINAL = {"confirmed", "rejected", "cancelled", "shipped"}


def order_path(order_id: str | uuid.UUID, action: str = "") -> str:
    """The URL of an order (or of one of its actions: ``events``, ``cancel``, ``ship``)."""
    return f"{ORDERS}/{order_id}" + (f"/{action}" if action else "")


def order_body(lines: list[tuple[str, int]], token: str = "tok_visa") -> dict[str, Any]:
    """A ``POST /orders`` body."""
    return {
        "items": [{"product_id": pid, "quantity": qty} for pid, qty in lines],
        "shipping_address": ADDRESS,
        "payment": {"token": token},
    }


@dataclass(frozen=True)
class User:
    """A user of a test and the Authorization header of a session."""

    id: str
    headers: dict[str, str]


@dataclass
class Shop:
    """A test's catalog (through the products service) and its orders service."""

    catalog: Catalog
    orders: Client
    products: Client
    admin: User
    customer: User
    other: User
    orders_db: asyncpg.Connection
    products_db: asyncpg.Connection
    placed: list[str] = field(default_factory=list)

    async def product(self, **fields: Any) -> dict[str, Any]:
        """A product of the test (see ``Catalog.product``)."""
        return await self.catalog.product(**fields)

    async def place(
        self,
        lines: list[tuple[str, int]],
        token: str = "tok_visa",
        *,
        user: User | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Place an order (202 expected); its body."""
        resp = await self.orders.post(
            ORDERS,
            json=order_body(lines, token),
            headers={**(user or self.customer).headers, **(headers or {})},
        )
        assert resp.status == 202, await resp.text()
        body: dict[str, Any] = await resp.json()
        self.placed.append(body["id"])
        return body

    async def get(self, order_id: str, user: User | None = None) -> dict[str, Any]:
        """``GET /orders/{id}`` as its owner (200 expected)."""
        resp = await self.orders.get(order_path(order_id), headers=(user or self.customer).headers)
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    async def outcome(
        self, order_id: str, *, within: float = 10.0, user: User | None = None
    ) -> dict[str, Any]:
        """Poll the order until its status is final."""

        async def final() -> dict[str, Any]:
            order = await self.get(order_id, user)
            return order if order["status"] in FINAL else {}

        result: dict[str, Any] = await wait_for(final, within=within, interval=0.05)
        return result

    async def inventory(self, product_id: str) -> dict[str, Any]:
        """The product's stored inventory."""
        return await inventory_row(self.products_db, product_id)

    async def settled(self, order_id: str, *, within: float = 10.0) -> None:
        """Wait until the order's saga has nothing left to do."""

        async def done() -> bool:
            step = await self.orders_db.fetchval(
                "SELECT step FROM order_sagas WHERE order_id = $1", uuid.UUID(order_id)
            )
            return bool(step == "done")

        await wait_for(done, within=within, interval=0.05)

    async def history(self, order_id: str, user: User | None = None) -> list[str]:
        """The types of the order's events, oldest first."""
        resp = await self.orders.get(
            order_path(order_id, "events"), headers=(user or self.customer).headers
        )
        assert resp.status == 200, await resp.text()
        return [e["type"] for e in await resp.json()]

    async def published(self, event_type: str, order_id: str) -> list[dict[str, Any]]:
        """The data of ``event_type`` events the orders service recorded for an order."""
        rows = await self.orders_db.fetch(
            "SELECT envelope::text AS envelope FROM outbox WHERE routing_key = $1"
            " ORDER BY created_at, id",
            event_type,
        )
        envelopes = [orjson.loads(r["envelope"]) for r in rows]
        return [e["data"] for e in envelopes if e["data"].get("order_id") == order_id]

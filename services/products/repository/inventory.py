"""SQL of the inventory: each product's stock and the order saga's reservations."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import asyncpg

from core.db import Connection
from services.products.models import Inventory, Reservation, ReservationStatus
from services.products.repository.base import TREE_LOCK, Repository

__all__ = ["InventoryRepository"]


def _inventory(row: asyncpg.Record) -> Inventory:
    return Inventory(
        product_id=row["product_id"],
        on_hand=row["on_hand"],
        reserved=row["reserved"],
        available=row["available"],
    )


class InventoryRepository(Repository):
    """Reads and writes stock (``inventory``) and reservations (``reservations``,
    ``reservation_lines``); the CHECK ``0 <= reserved <= on_hand`` guards every change."""

    # inventory ---------------------------------------------------------------------------------

    async def get_inventory(
        self, product_id: uuid.UUID, conn: Connection | None = None
    ) -> Inventory | None:
        """The stock of this product."""
        row = await self._db(conn).fetchrow(
            "SELECT product_id, on_hand, reserved, available FROM inventory WHERE product_id = $1",
            product_id,
        )
        return _inventory(row) if row is not None else None

    async def lock_inventory(
        self, product_ids: Iterable[uuid.UUID], conn: Connection
    ) -> dict[uuid.UUID, Inventory]:
        """The stock of these products (those that exist), rows locked in ascending id."""
        rows = await conn.fetch(
            """
            SELECT product_id, on_hand, reserved, available FROM inventory
             WHERE product_id = ANY ($1::uuid[])
             ORDER BY product_id
               FOR UPDATE
            """,
            sorted(set(product_ids)),
        )
        return {row["product_id"]: _inventory(row) for row in rows}

    async def set_on_hand(self, product_id: uuid.UUID, on_hand: int, conn: Connection) -> Inventory:
        """Set ``on_hand`` of a locked row (the CHECK refuses less than ``reserved``)."""
        row = await conn.fetchrow(
            """
            UPDATE inventory SET on_hand = $2, updated_at = now() WHERE product_id = $1
            RETURNING product_id, on_hand, reserved, available
            """,
            product_id,
            on_hand,
        )
        assert row is not None
        return _inventory(row)

    async def adjust(
        self,
        lines: Mapping[uuid.UUID, int],
        conn: Connection,
        *,
        reserved: int,
        on_hand: int = 0,
    ) -> list[Inventory]:
        """Add ``reserved * quantity`` to ``reserved`` and ``on_hand * quantity`` to ``on_hand``
        of each line's (locked) row; e.g. ``reserved=1`` reserves, ``reserved=-1`` releases,
        ``reserved=-1, on_hand=-1`` commits. The CHECK makes an overdraft fail, never pass."""
        ids = sorted(lines)
        rows = await conn.fetch(
            """
            UPDATE inventory AS i
               SET reserved = i.reserved + $3 * l.quantity,
                   on_hand = i.on_hand + $4 * l.quantity,
                   updated_at = now()
              FROM unnest($1::uuid[], $2::int[]) AS l (product_id, quantity)
             WHERE i.product_id = l.product_id
            RETURNING i.product_id, i.on_hand, i.reserved, i.available
            """,
            ids,
            [lines[product_id] for product_id in ids],
            reserved,
            on_hand,
        )
        return sorted((_inventory(row) for row in rows), key=lambda inv: inv.product_id)

    # reservations ------------------------------------------------------------------------------

    async def claim_reservation(
        self,
        order_id: uuid.UUID,
        status: Literal["reserved", "released"],
        conn: Connection,
    ) -> bool:
        """Take the category-tree lock shared (``lock_tree``: the first lock of all), then record
        the order with ``status`` unless it is known; whether it was new. One statement.

        A concurrent transaction claiming the same order makes this one wait for its outcome,
        so an order is decided once.
        """
        inserted = await conn.fetchval(
            """
            WITH tree AS (SELECT pg_advisory_xact_lock_shared($3))
            INSERT INTO reservations (order_id, status)
            SELECT $1::uuid, $2::text FROM tree
            ON CONFLICT (order_id) DO NOTHING
            RETURNING true
            """,
            order_id,
            status,
            TREE_LOCK,
        )
        return bool(inserted)

    async def lock_reservation(self, order_id: uuid.UUID, conn: Connection) -> Reservation | None:
        """The order's reservation, locked until the transaction ends."""
        row = await conn.fetchrow(
            """
            SELECT order_id, status, reason, product_ids FROM reservations
             WHERE order_id = $1 FOR UPDATE
            """,
            order_id,
        )
        if row is None:
            return None
        lines = await conn.fetch(
            """
            SELECT product_id, quantity FROM reservation_lines
             WHERE order_id = $1 ORDER BY product_id
            """,
            order_id,
        )
        return Reservation(
            order_id=row["order_id"],
            status=row["status"],
            reason=row["reason"],
            product_ids=list(row["product_ids"]),
            lines={line["product_id"]: line["quantity"] for line in lines},
        )

    async def reserve_lines(
        self, order_id: uuid.UUID, lines: Mapping[uuid.UUID, int], conn: Connection
    ) -> list[Inventory]:
        """Reserve the lines of an order on their (locked) rows and record them as the order's:
        ``adjust(lines, reserved=1)`` and the order's ``reservation_lines`` in one statement."""
        ids = sorted(lines)
        rows = await conn.fetch(
            """
            WITH l AS (
                SELECT * FROM unnest($2::uuid[], $3::int[]) AS l (product_id, quantity)
            ), recorded AS (
                INSERT INTO reservation_lines (order_id, product_id, quantity)
                SELECT $1, l.product_id, l.quantity FROM l
            )
            UPDATE inventory AS i
               SET reserved = i.reserved + l.quantity, updated_at = now()
              FROM l
             WHERE i.product_id = l.product_id
            RETURNING i.product_id, i.on_hand, i.reserved, i.available
            """,
            order_id,
            ids,
            [lines[product_id] for product_id in ids],
        )
        return sorted((_inventory(row) for row in rows), key=lambda inv: inv.product_id)

    async def set_reservation(
        self,
        order_id: uuid.UUID,
        status: ReservationStatus,
        conn: Connection,
        *,
        reason: str | None = None,
        product_ids: Sequence[uuid.UUID] = (),
    ) -> None:
        """Move an order's reservation to ``status``."""
        await conn.execute(
            """
            UPDATE reservations
               SET status = $2, reason = $3, product_ids = $4, updated_at = now()
             WHERE order_id = $1
            """,
            order_id,
            status,
            reason,
            list(product_ids),
        )

"""The event store: one append-only stream per order (``order_events``)."""

from __future__ import annotations

import uuid

import asyncpg

from core.db import Connection
from core.errors import Conflict
from services.orders.aggregate import NewEvent, StoredEvent
from services.orders.repository.store import Store

__all__ = ["ConcurrentAppend", "EventStore", "stored_event"]


class ConcurrentAppend(Conflict):
    """Another writer appended to the stream since it was read (optimistic concurrency: 409,
    or a retry of the bus message)."""

    def __init__(self, order_id: uuid.UUID) -> None:
        super().__init__("The order changed meanwhile; try again")
        self.order_id = order_id


def stored_event(row: asyncpg.Record) -> StoredEvent:
    """The event of an ``order_events`` row."""
    return StoredEvent(row["order_id"], row["seq"], row["type"], row["data"], row["occurred_at"])


class EventStore(Store):
    """Reads and appends order streams."""

    async def load_stream(
        self, order_id: uuid.UUID, conn: Connection | None = None
    ) -> list[StoredEvent]:
        """The order's events, oldest first (empty for an unknown order)."""
        rows = await (conn or self.pool).fetch(
            """
            SELECT order_id, seq, type, data, occurred_at FROM order_events
             WHERE order_id = $1 ORDER BY seq
            """,
            order_id,
        )
        return [stored_event(r) for r in rows]

    async def append(
        self, conn: Connection, order_id: uuid.UUID, expected: int, events: list[NewEvent]
    ) -> list[StoredEvent]:
        """Append ``events`` after version ``expected``; ``ConcurrentAppend`` if it moved."""
        if not events:
            return []
        try:
            rows = await conn.fetch(
                """
                INSERT INTO order_events (order_id, seq, type, data)
                SELECT $1, $2 + n, t, d
                  FROM unnest($3::text[], $4::jsonb[]) WITH ORDINALITY AS e(t, d, n)
                RETURNING order_id, seq, type, data, occurred_at
                """,
                order_id,
                expected,
                [e.type for e in events],
                [e.data for e in events],
            )
        except asyncpg.UniqueViolationError as exc:
            raise ConcurrentAppend(order_id) from exc
        return sorted((stored_event(r) for r in rows), key=lambda e: e.seq)

"""The read model (CQRS): ``order_views``, one denormalized row per order.

The projection folds an order's events into its view row. It runs inline, in the transaction
that appends the events (an order is readable the moment ``POST /orders`` answers 202, and the
view can never be behind or ahead of its stream); ``rebuild`` folds every stream from scratch,
in the order they were written, and replaces the whole table: the result equals the live model.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from core.db import Connection
from services.orders.aggregate import StoredEvent

__all__ = ["VIEW_COLUMNS", "apply", "project", "rebuild"]

VIEW_COLUMNS = (
    "id",
    "user_id",
    "status",
    "items",
    "total_cents",
    "currency",
    "reason",
    "shipping_address",
    "version",
    "created_at",
    "updated_at",
)

_STATUS_BY_EVENT = {
    "order.confirmed": "confirmed",
    "order.rejected": "rejected",
    "order.cancelled": "cancelled",
    "order.shipped": "shipped",
}


def apply(view: dict[str, Any] | None, event: StoredEvent) -> dict[str, Any] | None:
    """The view after ``event`` (``None``: the order has no view yet)."""
    if event.type == "order.placed":
        data = event.data
        return {
            "id": event.order_id,
            "user_id": uuid.UUID(data["user_id"]),
            "status": "pending",
            "items": [
                {
                    "product_id": line["product_id"],
                    "quantity": line["quantity"],
                    "unit_price_cents": line["unit_price_cents"],
                }
                for line in data["items"]
            ],
            "total_cents": data["total_cents"],
            "currency": data["currency"],
            "reason": None,
            "shipping_address": data.get("shipping_address", {}),
            "version": event.seq,
            "created_at": event.occurred_at,
            "updated_at": event.occurred_at,
        }
    if view is None:
        return None
    view = {**view, "version": event.seq, "updated_at": event.occurred_at}
    status = _STATUS_BY_EVENT.get(event.type)
    if status is not None:
        view["status"] = status
        if event.type == "order.rejected":
            view["reason"] = event.data["reason"]
        elif event.type == "order.cancelled":
            view["reason"] = event.data.get("reason", "cancelled")
    return view


def fold(view: dict[str, Any] | None, events: Iterable[StoredEvent]) -> dict[str, Any] | None:
    """``apply`` each event in turn."""
    for event in events:
        view = apply(view, event)
    return view


async def _load(conn: Connection, order_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {', '.join(VIEW_COLUMNS)} FROM order_views WHERE id = $1",  # noqa: S608  # nosec B608: constant columns
        order_id,
    )
    return dict(row) if row is not None else None


async def _store(conn: Connection, view: dict[str, Any]) -> None:
    placeholders = ", ".join(f"${i}" for i in range(1, len(VIEW_COLUMNS) + 1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in VIEW_COLUMNS if c != "id")
    await conn.execute(
        f"""
        INSERT INTO order_views ({", ".join(VIEW_COLUMNS)}) VALUES ({placeholders})
        ON CONFLICT (id) DO UPDATE SET {updates}
        """,  # noqa: S608  # nosec B608: constant columns, values are parameters
        *(view[c] for c in VIEW_COLUMNS),
    )


async def project(
    conn: Connection,
    order_id: uuid.UUID,
    events: list[StoredEvent],
    *,
    before: list[StoredEvent] | None = None,
) -> dict[str, Any] | None:
    """Apply newly appended ``events`` of one order to its view (inside their transaction);
    return the view as stored. ``before``: the stream up to them, when the caller has read it
    (the view is then folded from it instead of read back)."""
    if not events:
        return None
    if events[0].type == "order.placed":
        view = None
    elif before is not None:
        view = fold(None, before)
    else:
        view = await _load(conn, order_id)
    view = fold(view, events)
    if view is not None:
        await _store(conn, view)
    return view


async def rebuild(conn: Connection) -> int:
    """Replace the whole read model by folding every stream; return the number of orders.

    Run inside a transaction: the table is locked against concurrent projections (writers wait,
    readers keep reading the old rows until the commit). Streams are read through a cursor, one
    order at a time, so memory stays flat whatever their number.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("rebuild needs a connection inside a transaction")
    await conn.execute("LOCK TABLE order_views IN EXCLUSIVE MODE")
    await conn.execute("DELETE FROM order_views")
    count = 0
    current: uuid.UUID | None = None
    view: dict[str, Any] | None = None
    async for row in conn.cursor(
        "SELECT order_id, seq, type, data, occurred_at FROM order_events ORDER BY order_id, seq",
        prefetch=500,
    ):
        if row["order_id"] != current:
            if view is not None:
                await _store(conn, view)
                count += 1
            current, view = row["order_id"], None
        event = StoredEvent(
            row["order_id"], row["seq"], row["type"], row["data"], row["occurred_at"]
        )
        view = apply(view, event)
    if view is not None:
        await _store(conn, view)
        count += 1
    return count

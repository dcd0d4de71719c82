"""The read model (CQRS): ``order_views``, one denormalized row per order.

The projection folds an order's events into its view row (pure: this module); the read-model
repository (``services.orders.repository.read_model``) runs it inline, in the transaction that
appends the events (an order is readable the moment ``POST /orders`` answers 202, and the view
can never be behind or ahead of its stream), and rebuilds the whole table by folding every
stream from scratch, in the order they were written: the result equals the live model.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from services.orders.aggregate import OrderLineState, Status, StoredEvent

__all__ = ["VIEW_COLUMNS", "OrderView", "Row", "apply", "fold", "view_of"]

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


class Row(Protocol):
    """A view row by column name: a dict from ``apply``, or a database record."""

    def __getitem__(self, column: str, /) -> Any:
        """The value of ``column``."""
        ...


@dataclass(frozen=True, slots=True)
class OrderView:
    """An order as the read model shows it to its owner (or an admin)."""

    # No ``version``: cached as JSON under ``order:{id}``, a view keeps the shape ``OrderOut``
    # had there, so that records written by an older instance still validate.
    id: uuid.UUID
    user_id: uuid.UUID
    status: Status
    items: list[OrderLineState]
    total_cents: int
    currency: str
    shipping_address: dict[str, Any]
    reason: str | None
    created_at: datetime
    updated_at: datetime


def view_of(row: Row) -> OrderView:
    """The order view of a row of ``order_views`` (as stored, or as ``apply`` makes it)."""
    return OrderView(
        id=row["id"],
        user_id=row["user_id"],
        status=row["status"],
        items=[
            OrderLineState(
                uuid.UUID(str(line["product_id"])), line["quantity"], line["unit_price_cents"]
            )
            for line in row["items"]
        ],
        total_cents=row["total_cents"],
        currency=row["currency"],
        shipping_address=dict(row["shipping_address"]),
        reason=row["reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def apply(view: dict[str, Any] | None, event: StoredEvent) -> dict[str, Any] | None:
    """The view row after ``event`` (``None``: the order has no view yet)."""
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

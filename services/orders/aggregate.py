"""The event-sourced order: its stream of events is the truth; its state is their replay.

An order's stream is append-only, numbered ``seq`` 1, 2, ... Its state is derived by folding
``apply`` over the stream; commands (in ``service.py`` and ``saga.py``) read that state, decide,
and append new events with the version they read as the expected one (a concurrent append of
the same ``seq`` fails: optimistic concurrency).

Stream event types and their data:

==========================  ==================================================================
``order.placed``            ``user_id, items[{product_id, quantity, unit_price_cents}],
                            total_cents, currency, shipping_address``
``stock.reserved``          ``items``
``stock.reservation_failed`` ``reason, product_ids``
``stock.released``          ``items``
``payment.authorized``      ``payment_id, amount_cents``
``payment.declined``        ``amount_cents``
``payment.timed_out``       ``{}`` (no answer before the deadline: outcome unknown, voided)
``payment.refunded``        ``payment_id, amount_cents``
``order.confirmed``         ``{}``
``order.rejected``          ``reason``
``order.cancelled``         ``by`` (a user id)
``order.shipped``           ``by``
==========================  ==================================================================
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from core.errors import Conflict

__all__ = [
    "FINAL_STATUSES",
    "NewEvent",
    "Order",
    "OrderLineState",
    "OrderStateConflict",
    "Status",
    "StoredEvent",
]

Status = Literal["pending", "confirmed", "rejected", "cancelled", "shipped"]
StockState = Literal["none", "reserved", "failed", "released", "committed"]
PaymentState = Literal["none", "authorized", "declined", "timed_out", "refunded"]

FINAL_STATUSES: frozenset[str] = frozenset({"rejected", "cancelled", "shipped"})


class OrderStateConflict(Conflict):
    """The order's status does not allow this command (409)."""

    title = "Conflict"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append to a stream."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event of a stream as stored."""

    order_id: uuid.UUID
    seq: int
    type: str
    data: dict[str, Any]
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class OrderLineState:
    """A line of an order, priced at placement."""

    product_id: uuid.UUID
    quantity: int
    unit_price_cents: int


@dataclass
class Order:
    """An order's current state (the fold of its stream)."""

    id: uuid.UUID
    version: int = 0
    user_id: uuid.UUID | None = None
    status: Status = "pending"
    items: list[OrderLineState] = field(default_factory=list)
    total_cents: int = 0
    currency: str = "USD"
    shipping_address: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    stock: StockState = "none"
    payment: PaymentState = "none"
    payment_id: uuid.UUID | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def replay(cls, order_id: uuid.UUID, events: list[StoredEvent]) -> Order:
        """The state after ``events`` (oldest first)."""
        order = cls(order_id)
        for event in events:
            order.apply(event)
        return order

    @property
    def exists(self) -> bool:
        """Whether the stream has begun (``order.placed``)."""
        return self.version > 0

    @property
    def final(self) -> bool:
        """Whether the order can no longer change status."""
        return self.status in FINAL_STATUSES

    def apply(self, event: StoredEvent) -> None:
        """Fold one event into the state (events must come in ``seq`` order)."""
        if event.seq != self.version + 1:
            raise ValueError(f"order {self.id}: event {event.seq} after {self.version}")
        self.version = event.seq
        self.updated_at = event.occurred_at
        data = event.data
        match event.type:
            case "order.placed":
                self.user_id = uuid.UUID(data["user_id"])
                self.items = [
                    OrderLineState(
                        uuid.UUID(line["product_id"]), line["quantity"], line["unit_price_cents"]
                    )
                    for line in data["items"]
                ]
                self.total_cents = data["total_cents"]
                self.currency = data["currency"]
                self.shipping_address = data.get("shipping_address", {})
                self.created_at = event.occurred_at
            case "stock.reserved":
                self.stock = "reserved"
            case "stock.reservation_failed":
                self.stock = "failed"
            case "stock.released":
                if self.stock != "committed":
                    self.stock = "released"
            case "payment.authorized":
                self.payment = "authorized"
                self.payment_id = uuid.UUID(data["payment_id"])
            case "payment.declined":
                self.payment = "declined"
            case "payment.timed_out":
                self.payment = "timed_out"
            case "payment.refunded":
                self.payment = "refunded"
            case "order.confirmed":
                self.status = "confirmed"
            case "order.rejected":
                self.status = "rejected"
                self.reason = data["reason"]
            case "order.cancelled":
                self.status = "cancelled"
                self.reason = data.get("reason", "cancelled")
            case "order.shipped":
                self.status = "shipped"
                self.stock = "committed"
            case _:
                raise ValueError(f"unknown order event {event.type!r}")

    def ensure_cancellable(self) -> None:
        """Raise unless the order may be cancelled (``pending`` or ``confirmed``)."""
        if self.status not in ("pending", "confirmed"):
            raise OrderStateConflict(f"An order that is {self.status} cannot be cancelled")

    def ensure_shippable(self) -> None:
        """Raise unless the order may ship (``confirmed``)."""
        if self.status != "confirmed":
            raise OrderStateConflict(f"Only a confirmed order ships; this one is {self.status}")

"""Events the orders service publishes (API.md "Bus events"): its contracts, declared here only.

The products service consumes ``order.placed``, ``order.cancelled``, ``order.rejected`` and
``order.shipped``, importing this module (and nothing else of this service); this service
consumes the ``inventory.*`` answers from ``services.products.events``.

Published, through the outbox, in the transaction that appends the order's events:

- ``order.placed`` ``{order_id, user_id, items: [{product_id, quantity, unit_price_cents}],
  total_cents, currency}``: asks the products service to reserve the lines;
- ``order.confirmed`` / ``order.rejected`` ``{order_id, user_id, reason}`` (final outcomes of
  the saga);
- ``order.cancelled`` ``{order_id, reason}``: a user cancelled (``reason="cancelled"``); the
  products service releases the order's stock (it does the same on ``order.rejected``);
- ``order.shipped`` ``{order_id}``: commits the reservation;
- ``payment.authorized`` / ``payment.declined`` / ``payment.refunded``.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from core.bus import Event

__all__ = [
    "PUBLISHED_EVENTS",
    "OrderCancelled",
    "OrderConfirmed",
    "OrderLine",
    "OrderPlaced",
    "OrderRejected",
    "OrderShipped",
    "PaymentAuthorized",
    "PaymentDeclined",
    "PaymentRefunded",
]

Cents = Annotated[int, Field(ge=0)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Quantity = Annotated[int, Field(ge=1, le=1_000_000)]


class OrderLine(BaseModel):
    """A line of a placed order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    product_id: UUID
    quantity: Quantity
    unit_price_cents: Annotated[int, Field(ge=0)]


class OrderPlaced(Event):
    """``order.placed`` (published by orders): reserve the lines of this order."""

    event_type = "order.placed"
    event_version = 1

    order_id: UUID
    user_id: UUID
    items: Annotated[list[OrderLine], Field(min_length=1, max_length=1000)]
    total_cents: Annotated[int, Field(ge=0)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class OrderCancelled(Event):
    """``order.cancelled`` (published by orders): release the order's reservation."""

    event_type = "order.cancelled"
    event_version = 1

    order_id: UUID
    reason: str | None = None


class OrderRejected(Event):
    """``order.rejected`` (published by orders): the saga failed; release whatever the order
    holds (nothing, if its reservation failed), and refuse a late ``order.placed``."""

    event_type = "order.rejected"
    event_version = 1

    order_id: UUID
    user_id: UUID
    reason: str


class OrderShipped(Event):
    """``order.shipped`` (published by orders): the reserved stock left the warehouse."""

    event_type = "order.shipped"
    event_version = 1

    order_id: UUID


class OrderConfirmed(Event):
    """``order.confirmed``: stock reserved and payment authorized."""

    event_type = "order.confirmed"
    event_version = 1

    order_id: UUID
    user_id: UUID
    total_cents: Cents
    currency: Currency


class PaymentAuthorized(Event):
    """``payment.authorized``: the order's amount is held on the customer's card."""

    event_type = "payment.authorized"
    event_version = 1

    order_id: UUID
    payment_id: UUID
    amount_cents: Cents
    currency: Currency


class PaymentDeclined(Event):
    """``payment.declined``: the provider refused the payment."""

    event_type = "payment.declined"
    event_version = 1

    order_id: UUID
    amount_cents: Cents
    currency: Currency


class PaymentRefunded(Event):
    """``payment.refunded``: an authorized payment was given back."""

    event_type = "payment.refunded"
    event_version = 1

    order_id: UUID
    payment_id: UUID
    amount_cents: Cents
    currency: Currency


PUBLISHED_EVENTS: tuple[type[Event], ...] = (
    OrderPlaced,
    OrderConfirmed,
    OrderRejected,
    OrderCancelled,
    OrderShipped,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentRefunded,
)

"""Events the orders service publishes and the inventory events it consumes (API.md "Bus events").

The ``order.placed``, ``order.cancelled``, ``order.rejected`` and ``order.shipped`` classes, and
the ``inventory.*`` answers, are the products service's own (``services.products.events``),
imported rather than declared again: the bus resolves an envelope to *the* class registered for
its ``(type, version)``, one per process, and the products consumer checks ``isinstance``
against its classes, so a second declaration would break the single-process mode.

Published, through the outbox, in the transaction that appends the order's events:

- ``order.placed`` ``{order_id, user_id, items: [{product_id, quantity, unit_price_cents}],
  total_cents, currency}``: asks the products service to reserve the lines;
- ``order.confirmed`` / ``order.rejected`` ``{order_id, user_id, reason}`` (final outcomes of
  the saga);
- ``order.cancelled`` ``{order_id, reason}``: a user cancelled (``reason="cancelled"``); the
  products service releases the order's stock (it does the same on ``order.rejected``);
- ``order.shipped`` ``{order_id}``: commits the reservation;
- ``payment.authorized`` / ``payment.declined`` / ``payment.refunded``.

Consumed: ``inventory.reserved``, ``inventory.reservation_failed``, ``inventory.released``.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from pydantic import Field

from core.bus import Event
from services.products.events import (
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    OrderCancelled,
    OrderLine,
    OrderPlaced,
    OrderRejected,
    OrderShipped,
)

__all__ = [
    "CONSUMED_EVENTS",
    "PUBLISHED_EVENTS",
    "InventoryReleased",
    "InventoryReservationFailed",
    "InventoryReserved",
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
CONSUMED_EVENTS: tuple[type[Event], ...] = (
    InventoryReserved,
    InventoryReservationFailed,
    InventoryReleased,
)

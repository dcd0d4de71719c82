"""Events the products service publishes and the order events it consumes (API.md "Bus events").

Published, through the outbox, in the transaction of the change:

- ``product.created`` / ``product.updated`` / ``product.deleted``: the catalog changed.
- ``inventory.changed``: a product's ``on_hand``/``reserved`` changed (``reason`` says why).
- ``inventory.reserved`` ``{order_id, items: [{product_id, quantity}]}``: every line of the order
  is reserved.
- ``inventory.reservation_failed`` ``{order_id, reason, product_ids}``: nothing was reserved;
  ``reason`` is ``"unknown_product"`` (``product_ids`` do not exist) or ``"out_of_stock"``
  (``product_ids`` have fewer available than asked).
- ``inventory.released`` ``{order_id, items}``: the order's reservation was given back (``items``
  is empty when there was nothing to give back).

Consumed from the order service, which imports these classes from here (one class per
``(type, version)`` in a process)::

    order.placed    {order_id, user_id, items: [{product_id, quantity, unit_price_cents}],
                     total_cents, currency}
    order.cancelled {order_id, reason?}
    order.shipped   {order_id}

``order.placed`` reserves all lines or none and answers ``inventory.reserved`` or
``inventory.reservation_failed``; ``order.cancelled`` releases and answers ``inventory.released``;
``order.shipped`` commits (``on_hand`` and ``reserved`` both drop). Each is keyed by ``order_id``:
the same order again changes nothing and answers the first outcome again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from core.bus import Event

__all__ = [
    "CONSUMED_EVENTS",
    "PUBLISHED_EVENTS",
    "InventoryChanged",
    "InventoryReleased",
    "InventoryReservationFailed",
    "InventoryReserved",
    "OrderCancelled",
    "OrderLine",
    "OrderPlaced",
    "OrderRejected",
    "OrderShipped",
    "ProductCreated",
    "ProductDeleted",
    "ProductUpdated",
    "ReservedItem",
]

Quantity = Annotated[int, Field(ge=1, le=1_000_000)]


class ProductCreated(Event):
    """``product.created``: a product was added to the catalog."""

    event_type = "product.created"
    event_version = 1

    product_id: UUID
    sku: str
    name: str
    price_cents: int
    currency: str
    category_id: UUID | None
    attributes: dict[str, Any]
    stock: int
    created_at: datetime


class ProductUpdated(Event):
    """``product.updated``: the product as it now is, and which fields changed."""

    event_type = "product.updated"
    event_version = 1

    product_id: UUID
    sku: str
    name: str
    price_cents: int
    currency: str
    category_id: UUID | None
    attributes: dict[str, Any]
    changed: list[str]
    updated_at: datetime


class ProductDeleted(Event):
    """``product.deleted``: the product (and its inventory) is gone."""

    event_type = "product.deleted"
    event_version = 1

    product_id: UUID
    sku: str


class InventoryChanged(Event):
    """``inventory.changed``: a product's stock after a change, and what caused it."""

    event_type = "inventory.changed"
    event_version = 1

    product_id: UUID
    on_hand: int
    reserved: int
    available: int
    reason: Literal["set", "reserved", "released", "committed"]
    order_id: UUID | None = None


class ReservedItem(BaseModel):
    """One reserved (or released) line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    product_id: UUID
    quantity: Quantity


class InventoryReserved(Event):
    """``inventory.reserved``: every line of the order is reserved."""

    event_type = "inventory.reserved"
    event_version = 1

    order_id: UUID
    items: list[ReservedItem]


class InventoryReservationFailed(Event):
    """``inventory.reservation_failed``: nothing of the order was reserved."""

    event_type = "inventory.reservation_failed"
    event_version = 1

    order_id: UUID
    reason: Literal["out_of_stock", "unknown_product"]
    product_ids: list[UUID]


class InventoryReleased(Event):
    """``inventory.released``: the order's reserved stock is available again."""

    event_type = "inventory.released"
    event_version = 1

    order_id: UUID
    items: list[ReservedItem]


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


PUBLISHED_EVENTS: tuple[type[Event], ...] = (
    ProductCreated,
    ProductUpdated,
    ProductDeleted,
    InventoryChanged,
    InventoryReserved,
    InventoryReservationFailed,
    InventoryReleased,
)
CONSUMED_EVENTS: tuple[type[Event], ...] = (
    OrderPlaced,
    OrderCancelled,
    OrderRejected,
    OrderShipped,
)

"""Events the products service publishes (API.md "Bus events"): its contracts, declared here only.

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

The order service consumes the ``inventory.*`` answers, importing this module (and nothing
else of this service). They answer the order events this service consumes
(``services.orders.events``): ``order.placed`` reserves all lines or none and is answered by
``inventory.reserved`` or ``inventory.reservation_failed``; ``order.cancelled`` and
``order.rejected`` release and are answered by ``inventory.released``; ``order.shipped`` commits
(``on_hand`` and ``reserved`` both drop). Each is keyed by ``order_id``: the same order again
changes nothing and answers the first outcome again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from core.bus import Event

__all__ = [
    "PUBLISHED_EVENTS",
    "InventoryChanged",
    "InventoryReleased",
    "InventoryReservationFailed",
    "InventoryReserved",
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


PUBLISHED_EVENTS: tuple[type[Event], ...] = (
    ProductCreated,
    ProductUpdated,
    ProductDeleted,
    InventoryChanged,
    InventoryReserved,
    InventoryReservationFailed,
    InventoryReleased,
)

"""Domain objects of the products service: what the repository returns, the service decides on
and the API shows (through its own response schemas)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

__all__ = ["Category", "Inventory", "Product", "Reservation", "ReservationStatus"]

ReservationStatus = Literal["reserved", "failed", "released", "committed"]


@dataclass(frozen=True, slots=True)
class Category:
    """A category of the catalog tree (``parent_id``: none at the top level)."""

    id: uuid.UUID
    name: str
    slug: str
    parent_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class Product:
    """A product; ``stock`` is its inventory's ``available``."""

    id: uuid.UUID
    sku: str
    name: str
    description: str
    price_cents: int
    currency: str
    category_id: uuid.UUID | None
    attributes: dict[str, Any]
    stock: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Inventory:
    """A product's stock: ``available = on_hand - reserved``."""

    product_id: uuid.UUID
    on_hand: int
    reserved: int
    available: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """What is recorded for an order: its status and its lines (``{product_id: quantity}``)."""

    order_id: uuid.UUID
    status: ReservationStatus
    reason: Literal["out_of_stock", "unknown_product"] | None
    product_ids: list[uuid.UUID]
    lines: dict[uuid.UUID, int]

"""Request and response bodies of the orders service (API.md "Orders").

An order has 1..100 lines of 1..1000 units each; a product may appear on one line only. The
client names products and quantities, never prices: each line's ``unit_price_cents`` is the
catalog's price at placement. ``shipping_address`` is a small free-form object of strings
(``name``, ``line1``, ``city``, ``postal_code``, ``country``, ...).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from core.schemas import InputModel, OutputModel

__all__ = [
    "MAX_LINES",
    "MAX_QUANTITY",
    "LineIn",
    "LineOut",
    "OrderEventOut",
    "OrderIn",
    "OrderOut",
    "PaymentIn",
]

MAX_LINES = 100
MAX_QUANTITY = 1000

AddressText = Annotated[str, StringConstraints(min_length=1, max_length=200)]
AddressKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class LineIn(InputModel):
    """A product and how many units of it."""

    product_id: UUID
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY)]


class PaymentIn(InputModel):
    """The payment: a token of the payment provider (never card data)."""

    token: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class OrderIn(InputModel):
    """``POST /api/v1/orders``."""

    items: Annotated[list[LineIn], Field(min_length=1, max_length=MAX_LINES)]
    shipping_address: Annotated[dict[AddressKey, AddressText], Field(min_length=1, max_length=20)]
    payment: PaymentIn

    @field_validator("items")
    @classmethod
    def _one_line_per_product(cls, items: list[LineIn]) -> list[LineIn]:
        seen: set[UUID] = set()
        for line in items:
            if line.product_id in seen:
                raise PydanticCustomError(
                    "duplicate_product", "Each product may appear on one line only"
                )
            seen.add(line.product_id)
        return items


class LineOut(OutputModel):
    """A line of an order, priced at placement."""

    product_id: UUID
    quantity: int
    unit_price_cents: int


class OrderOut(OutputModel):
    """An order as its owner (or an admin) sees it."""

    id: UUID
    user_id: UUID
    status: str
    items: list[LineOut]
    total_cents: int
    currency: str
    shipping_address: dict[str, Any]
    reason: str | None
    created_at: datetime
    updated_at: datetime


class OrderEventOut(OutputModel):
    """One event of an order's history."""

    seq: int
    type: str
    data: dict[str, Any]
    occurred_at: datetime

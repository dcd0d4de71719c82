"""The products service's refusals (each maps to its problem type and HTTP status in core)."""

from __future__ import annotations

from typing import ClassVar

from core.errors import Conflict, NotFound, ValidationFailed

__all__ = [
    "CategoryCycle",
    "CategoryInUse",
    "CategoryNotFound",
    "ProductNotFound",
    "ProductReserved",
    "SkuTaken",
    "SlugTaken",
    "StockBelowReserved",
    "unknown_reference",
]


class ProductNotFound(NotFound):
    """No product with that id."""


class CategoryNotFound(NotFound):
    """No category with that id."""


class SkuTaken(Conflict):
    """Another product has this SKU."""

    type: ClassVar[str] = "https://aioshop.dev/problems/sku-taken"


class SlugTaken(Conflict):
    """Another category has this slug."""

    type: ClassVar[str] = "https://aioshop.dev/problems/slug-taken"


class StockBelowReserved(Conflict):
    """``on_hand`` would fall below what orders have reserved."""

    type: ClassVar[str] = "https://aioshop.dev/problems/stock-below-reserved"


class ProductReserved(Conflict):
    """A product with reserved stock cannot be deleted (orders are waiting for it)."""

    type: ClassVar[str] = "https://aioshop.dev/problems/product-reserved"


class CategoryInUse(Conflict):
    """A category with sub-categories or products cannot be deleted."""

    type: ClassVar[str] = "https://aioshop.dev/problems/category-in-use"


class CategoryCycle(Conflict):
    """A category cannot move under itself or one of its sub-categories."""

    type: ClassVar[str] = "https://aioshop.dev/problems/category-cycle"


def unknown_reference(loc: str, what: str) -> ValidationFailed:
    """A 422 on body field ``loc``: it names no existing ``what``."""
    return ValidationFailed(
        [{"loc": ["body", loc], "msg": f"No {what} with this id", "type": "reference_unknown"}]
    )

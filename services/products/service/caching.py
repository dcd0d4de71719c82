"""What the products service caches, how long, and what each write makes stale.

Reads go through ``@cached`` when the service has a cache:

- ``product:{id}`` (and ``inventory:{id}``), tagged ``product:{id}``: one product, with its stock;
- a listing page is cached as the *ids* of its products and its next cursor, tagged ``catalog``,
  ``listings:<scope>`` and, when it filters on stock, ``stock:<scope>``, where ``<scope>`` is
  ``all`` or ``category:{id}`` (the category asked for); its items are then read through the
  per-product cache, so a stock or price change reaches every listing that shows the product by
  invalidating that product alone;
- the category list and each category, tagged ``categories``.

Every write collects what it made stale (``Stale``) and invalidates it once its transaction has
committed, never before (a read between the two would cache the old value again):

- product created/deleted, or updated in a listed field (name, description, price, category):
  ``product:{id}`` and ``listings:all`` + ``listings:category:{c}`` for the product's old and new
  category and their ancestors (a category's listing includes its sub-categories); other fields:
  ``product:{id}`` alone;
- stock change: ``product:{id}``; when availability crosses zero also ``stock:all`` +
  ``stock:category:{c}`` up the tree (only then can an ``in_stock`` listing change);
- a category moved: the ``listings:``/``stock:`` tags of its old and new ancestors; any category
  write: ``categories``.

Invalidation bumps versions in Redis and reaches every instance (see ``core.cache``), so a read
through any instance is at most ~1 s staler than the commit. If the process dies between commit
and invalidation, entries live out their ttl (60 s products, 30 s listings).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from core.cache import Cache
from services.products.repository import ListingQuery

__all__ = [
    "CATEGORY_TTL",
    "LISTED_FIELDS",
    "LISTING_TTL",
    "NOT_FOUND_TTL",
    "PRODUCT_TTL",
    "Stale",
    "invalidate",
    "listing_tags",
]

PRODUCT_TTL = 60.0
LISTING_TTL = 30.0
CATEGORY_TTL = 300.0
NOT_FOUND_TTL = 5.0
# A change to one of these fields may move the product in (or out of) a listing.
LISTED_FIELDS = frozenset({"name", "description", "price_cents", "category_id"})


@dataclass
class Stale:
    """Cache tags a transaction made stale: invalidated once it has committed."""

    tags: set[str] = field(default_factory=set)

    def product(self, product_id: uuid.UUID) -> None:
        """The product's own reads (product and inventory)."""
        self.tags.add(f"product:{product_id}")

    def listings(self, categories: Iterable[uuid.UUID]) -> None:
        """Every listing whose membership or order may change, in these categories (and all)."""
        self.tags.add("listings:all")
        self.tags.update(f"listings:category:{c}" for c in categories)

    def stock(self, categories: Iterable[uuid.UUID]) -> None:
        """Every listing filtering on stock, in these categories (and all)."""
        self.tags.add("stock:all")
        self.tags.update(f"stock:category:{c}" for c in categories)

    def categories(self) -> None:
        """The category list and reads."""
        self.tags.add("categories")


def listing_tags(query: ListingQuery) -> list[str]:
    """The tags of a cached listing page (see the module docstring)."""
    scope = "all" if query.category_id is None else f"category:{query.category_id}"
    tags = ["catalog", f"listings:{scope}"]
    if query.in_stock is not None:
        tags.append(f"stock:{scope}")
    return tags


async def invalidate(cache: Cache | None, stale: Stale) -> None:
    """Invalidate, on every instance, what a committed transaction made stale."""
    if cache is not None and stale.tags:
        await cache.invalidate(tags=sorted(stale.tags))

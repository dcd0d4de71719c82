"""Business rules of the products service. No aiohttp, no SQL.

- ``catalog``: categories, products, listing pages, batch reads (``CatalogService``);
- ``inventory``: stock and the order saga's reservations (``InventoryService``);
- ``caching``: what is cached and what each write makes stale (``Stale``);
- ``listing``: pages and their cursors; ``errors``: the refusals.

``ProductsService`` is the entry point the app, the API and the bus handlers hold: the two
services over one cache and outbox, and the saga's steps.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from core.bus import Outbox
from core.cache import Cache
from core.db import Connection
from services.products.repository import CatalogRepository, InventoryRepository
from services.products.service.caching import Stale, invalidate, listing_tags
from services.products.service.catalog import CatalogService
from services.products.service.errors import (
    CategoryCycle,
    CategoryInUse,
    CategoryNotFound,
    ProductNotFound,
    ProductReserved,
    SkuTaken,
    SlugTaken,
    StockBelowReserved,
)
from services.products.service.inventory import InventoryService, ReservationOutcome
from services.products.service.listing import CategoryPage, IdPage, ProductPage

__all__ = [
    "CatalogService",
    "CategoryCycle",
    "CategoryInUse",
    "CategoryNotFound",
    "CategoryPage",
    "IdPage",
    "InventoryService",
    "ProductNotFound",
    "ProductPage",
    "ProductReserved",
    "ProductsService",
    "ReservationOutcome",
    "SkuTaken",
    "SlugTaken",
    "Stale",
    "StockBelowReserved",
    "listing_tags",
]


class ProductsService:
    """The catalog and the inventory over one cache (``None``: every read from PostgreSQL)."""

    def __init__(
        self,
        catalog: CatalogRepository,
        inventory: InventoryRepository,
        *,
        outbox: Outbox,
        cache: Cache | None,
    ) -> None:
        self.cache = cache
        self.catalog = CatalogService(catalog, inventory, outbox=outbox, cache=cache)
        self.inventory = InventoryService(inventory, catalog, outbox=outbox, cache=cache)

    async def invalidate(self, stale: Stale) -> None:
        """Invalidate what a committed transaction made stale (see the ``*_in`` methods)."""
        await invalidate(self.cache, stale)

    # the order saga's steps (see services.products.service.inventory) ---------------------------

    async def reserve(
        self, order_id: uuid.UUID, lines: Iterable[tuple[uuid.UUID, int]]
    ) -> ReservationOutcome:
        """Reserve every line of an order, or none, in a transaction of its own."""
        return await self.inventory.reserve(order_id, lines)

    async def release(self, order_id: uuid.UUID) -> ReservationOutcome:
        """Give back an order's reserved stock (an order cancelled or rejected)."""
        return await self.inventory.release(order_id)

    async def commit(self, order_id: uuid.UUID) -> ReservationOutcome:
        """Take an order's reserved stock off the shelf (an order shipped)."""
        return await self.inventory.commit(order_id)

    async def reserve_in(
        self, conn: Connection, order_id: uuid.UUID, lines: Iterable[tuple[uuid.UUID, int]]
    ) -> tuple[ReservationOutcome, Stale]:
        """``reserve`` inside the caller's transaction; pass the ``Stale`` to ``invalidate``
        once it has committed."""
        return await self.inventory.reserve_in(conn, order_id, lines)

    async def release_in(
        self, conn: Connection, order_id: uuid.UUID
    ) -> tuple[ReservationOutcome, Stale]:
        """``release`` inside the caller's transaction (see ``reserve_in``)."""
        return await self.inventory.release_in(conn, order_id)

    async def commit_in(
        self, conn: Connection, order_id: uuid.UUID
    ) -> tuple[ReservationOutcome, Stale]:
        """``commit`` inside the caller's transaction (see ``reserve_in``)."""
        return await self.inventory.commit_in(conn, order_id)

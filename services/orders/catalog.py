"""Prices from the catalog, read over HTTP from the products service at placement.

Why HTTP and not a local price read-model fed by ``product.*`` events: a price must be the
catalog's price *at placement*. A local copy lags its events (an order placed right after a
price change, or right after a product was created, would be priced from a stale copy or
refused as unknown), and needs a backfill for products created before the orders service first
ran. Reading ``GET /api/v1/products/{id}`` answers with the catalog's current price, served from
the products service's own cache (never staler than a confirmed write plus one second), and an
unknown product is refused at once with a 422. The cost is a dependency on the products
service being up to *place* orders (503 otherwise); every later saga step goes over the bus.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import aiohttp

from core.context import get_correlation_id
from core.errors import ServiceUnavailable

__all__ = ["CatalogClient", "CatalogUnavailable", "Price", "UnknownProducts"]


@dataclass(frozen=True, slots=True)
class Price:
    """A product's price in the catalog."""

    product_id: uuid.UUID
    price_cents: int
    currency: str


class UnknownProducts(Exception):
    """Products that the catalog does not know."""

    def __init__(self, product_ids: list[uuid.UUID]) -> None:
        super().__init__(", ".join(map(str, product_ids)))
        self.product_ids = product_ids


class CatalogUnavailable(ServiceUnavailable):
    """The catalog did not answer (503)."""

    def __init__(self) -> None:
        super().__init__("The catalog is unavailable; try again later")


class CatalogClient:
    """Reads product prices from the products service."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, *, concurrency: int = 16
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self._limit = asyncio.Semaphore(concurrency)

    async def _price(self, product_id: uuid.UUID) -> Price | None:
        headers = {}
        correlation = get_correlation_id()
        if correlation:
            headers["X-Correlation-ID"] = correlation
        async with self._limit:
            try:
                async with self.session.get(
                    f"{self.base_url}/api/v1/products/{product_id}", headers=headers
                ) as resp:
                    if resp.status == 404:
                        return None
                    if resp.status != 200:
                        raise CatalogUnavailable()
                    body = await resp.json()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise CatalogUnavailable() from exc
        return Price(product_id, int(body["price_cents"]), str(body["currency"]))

    async def prices(self, product_ids: list[uuid.UUID]) -> dict[uuid.UUID, Price]:
        """The price of each product; ``UnknownProducts`` if any does not exist."""
        found = await asyncio.gather(*(self._price(pid) for pid in product_ids))
        missing = [pid for pid, price in zip(product_ids, found, strict=True) if price is None]
        if missing:
            raise UnknownProducts(missing)
        return {price.product_id: price for price in found if price is not None}

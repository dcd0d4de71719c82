"""Prices from the catalog, read over HTTP from the products service at placement.

Why HTTP and not a local price read-model fed by ``product.*`` events: a price must be the
catalog's price *at placement*. A local copy lags its events (an order placed right after a
price change, or right after a product was created, would be priced from a stale copy or
refused as unknown), and needs a backfill for products created before the orders service first
ran. Reading ``GET /api/v1/products/batch?ids=...`` answers with the catalog's current prices of
all the order's products in one request (up to 100 ids, an order's maximum of lines), each served
from the products service's per-product cache (never staler than a confirmed write plus one
second), and an unknown product is refused at once with a 422. The cost is a dependency on the
products service being up to *place* orders (503 otherwise, 504 when it does not answer within
``products_timeout``); every later saga step goes over the bus. The batch route must be
deployed on the products service before this client.

``PRODUCTS_URL`` may list several instances, comma-separated (``aioshop up --replicas
products=2`` sets them all): reads go round-robin over them, and one that refuses the connection,
drops it or answers 503 is followed at once by the next (the read is idempotent), so that a
crashed or restarting products instance does not fail orders. An instance that failed so is tried
last for ``COOL_DOWN`` seconds. A 4xx, or a timeout, is the answer: no failover. An entry
``dns+http://products:8002`` stands for every address the name resolves to (``core.discovery``:
a Kubernetes headless Service, Compose replicas): ``discovery`` keeps the list current and is
asked to resolve again whenever an instance fails over.

While tracing is on (``core.tracing``), each read is a client span whose ``traceparent`` goes
with the request.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass

import aiohttp

from core import tracing
from core.context import get_correlation_id
from core.discovery import Discovery, DnsResolver, is_discovered
from core.errors import GatewayTimeout, ServiceUnavailable

__all__ = ["CatalogClient", "CatalogTimeout", "CatalogUnavailable", "Price", "UnknownProducts"]


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


class CatalogTimeout(GatewayTimeout):
    """The catalog did not answer within ``products_timeout`` (504)."""

    def __init__(self) -> None:
        super().__init__("The catalog did not answer in time; try again later")


class _Failover(Exception):
    """This instance failed in a way that another one may not: try the next."""


class CatalogClient:
    """Reads product prices from the products service: one request per ``BATCH`` products.

    ``base_url`` is one base URL or several, comma-separated (see the module docstring)."""

    BATCH = 100  # the products service's limit of ids per batch read
    COOL_DOWN = 2.0  # seconds an instance that failed is tried after the others

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        resolver: DnsResolver | None = None,
        discovery_interval: float = 5.0,
    ) -> None:
        self.session = session
        specs = [url.strip().rstrip("/") for url in base_url.split(",") if url.strip()]
        if not specs:
            raise ValueError("the catalog needs at least one base URL")
        self.base_urls = [spec for spec in specs if not is_discovered(spec)]
        self.base_url = specs[0]
        self.discovery: Discovery | None = None
        if any(is_discovered(spec) for spec in specs):
            self.discovery = Discovery(
                specs,
                resolver or DnsResolver(),
                interval=discovery_interval,
                on_change=self._found,
                label="products",
            )
        self._turn = itertools.count()
        self._failed_at: dict[str, float] = {}

    def _found(self, urls: list[str]) -> None:
        self.base_urls = urls

    async def start(self) -> None:
        """Resolve the discovered instances, and keep them current (nothing to do without)."""
        if self.discovery is not None:
            await self.discovery.start()

    async def stop(self) -> None:
        """Stop resolving."""
        if self.discovery is not None:
            await self.discovery.stop()

    def _order(self) -> list[str]:
        """The URLs to try for one read: round-robin, those that failed lately last."""
        urls = list(self.base_urls)
        if len(urls) > 1:
            start = next(self._turn) % len(urls)
            urls = urls[start:] + urls[:start]
            now = time.monotonic()
            urls.sort(
                key=lambda url: now - self._failed_at.get(url, -self.COOL_DOWN) < self.COOL_DOWN
            )
        return urls

    async def _batch(self, product_ids: list[uuid.UUID]) -> dict[uuid.UUID, Price]:
        urls = self._order()
        if not urls:  # discovered, and none found (yet)
            if self.discovery is not None:
                self.discovery.refresh_soon()
            raise CatalogUnavailable()
        for index, url in enumerate(urls):
            try:
                return await self._batch_from(url, product_ids)
            except _Failover as exc:
                self._failed_at[url] = time.monotonic()
                if self.discovery is not None:
                    self.discovery.refresh_soon()  # it may be gone for good
                if index == len(urls) - 1:
                    raise CatalogUnavailable() from exc.__cause__
        raise AssertionError("unreachable")  # pragma: no cover

    async def _batch_from(
        self, base_url: str, product_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, Price]:
        headers = {}
        correlation = get_correlation_id()
        if correlation:
            headers["X-Correlation-ID"] = correlation
        url = f"{base_url}/api/v1/products/batch"
        try:
            with tracing.client_span(
                "GET", url, headers, service="orders", peer="products"
            ) as span:
                async with self.session.get(
                    url, params={"ids": ",".join(map(str, product_ids))}, headers=headers
                ) as resp:
                    tracing.record_status(span, resp.status)
                    if resp.status == 503:
                        raise _Failover()
                    if resp.status != 200:
                        raise CatalogUnavailable()
                    body = await resp.json()
        except TimeoutError as exc:  # aiohttp's timeouts too: ServerTimeoutError is one
            raise CatalogTimeout() from exc
        except aiohttp.ClientConnectionError as exc:  # refused, reset, dropped: the next one
            raise _Failover() from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise CatalogUnavailable() from exc
        try:
            prices = [
                Price(uuid.UUID(item["id"]), int(item["price_cents"]), str(item["currency"]))
                for item in body["items"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise CatalogUnavailable() from exc
        return {price.product_id: price for price in prices}

    async def prices(self, product_ids: list[uuid.UUID]) -> dict[uuid.UUID, Price]:
        """The price of each product; ``UnknownProducts`` if any does not exist."""
        wanted = list(dict.fromkeys(product_ids))
        found: dict[uuid.UUID, Price] = {}
        for start in range(0, len(wanted), self.BATCH):
            found.update(await self._batch(wanted[start : start + self.BATCH]))
        missing = [pid for pid in wanted if pid not in found]
        if missing:
            raise UnknownProducts(missing)
        return {pid: found[pid] for pid in wanted}

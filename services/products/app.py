"""Wiring of the products service: settings -> resources -> routes -> bus subscriptions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from core import DB_POOL, OUTBOX, create_app, postgres_ctx, redis_ctx
from core.app import CleanupCtx, auth_ctx
from core.bus import Bus, Transport, bus_ctx, bus_workers_ctx
from core.cache import CACHE, cache_ctx, cache_warmup_ctx
from core.cache.warming import Loads
from services.products.api import router
from services.products.consumers import subscribe
from services.products.events import PUBLISHED_EVENTS
from services.products.keys import PRODUCTS_SERVICE
from services.products.repository import CatalogRepository, InventoryRepository
from services.products.repository.hot import HotRepository
from services.products.service import ProductsService
from services.products.service.warming import hot_set
from services.products.settings import Settings

__all__ = ["create_products_app"]


def _service_ctx(settings: Settings) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[PRODUCTS_SERVICE] = ProductsService(
            CatalogRepository(app[DB_POOL]),
            InventoryRepository(app[DB_POOL]),
            outbox=app[OUTBOX],
            cache=app[CACHE] if settings.cache_enabled else None,
        )
        yield

    return ctx


def _warmup(settings: Settings) -> Callable[[web.Application], Loads]:
    def loads(app: web.Application) -> Loads:
        catalog = app[PRODUCTS_SERVICE].catalog
        return hot_set(
            catalog, HotRepository(app[DB_POOL]), products=settings.cache_warmup_products
        )

    return loads


def create_products_app(
    settings: Settings | None = None, *, transport: Transport | None = None
) -> web.Application:
    """The products service application (``transport``: share a bus transport, e.g. in memory).

    Without ``settings.cache_enabled`` every read goes to PostgreSQL (no cache is created).
    With ``settings.cache_warmup`` (and the cache), ``/readyz`` passes once the hot set is warm
    (``services.products.service.warming``) or the warm-up has given up.
    """
    settings = settings or Settings()

    def declare(app: web.Application, bus: Bus) -> None:
        bus.declare_publishes(*PUBLISHED_EVENTS)
        subscribe(app, bus, queue=settings.bus_queue)

    resources: list[CleanupCtx] = [
        redis_ctx(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            pool_timeout=settings.redis_pool_timeout,
        ),
        postgres_ctx(
            settings.database_url,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            statement_timeout=settings.db_statement_timeout,
            acquire_timeout=settings.db_acquire_timeout,
        ),
        auth_ctx(settings),
    ]
    resources.append(bus_ctx(settings, setup=declare, transport=transport))
    if settings.cache_enabled:  # after the bus: its invalidations are broadcasts on it
        resources.append(cache_ctx(settings, invalidation="bus"))
    resources += [
        _service_ctx(settings),
        bus_workers_ctx(settings.database_url),
    ]
    if settings.cache_enabled and settings.cache_warmup:  # once the service exists
        resources.append(cache_warmup_ctx(_warmup(settings), timeout=settings.cache_warmup_timeout))
    return create_app(
        "products",
        settings,
        routers=[router],
        resources=resources,
        title="aioshop products",
        description="Catalog, inventory and stock reservations.",
    )

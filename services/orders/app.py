"""Wiring of the orders service: settings -> resources -> routes -> bus subscriptions -> saga."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from core import DB_POOL, HEALTH, METRICS, OUTBOX, create_app, postgres_ctx, redis_ctx
from core.app import CleanupCtx, auth_ctx
from core.bus import Bus, Transport, bus_ctx, bus_workers_ctx, make_transport
from core.cache import CACHE, cache_ctx
from core.discovery import DnsResolver
from core.snapshot import add_figures
from services.orders.api import router
from services.orders.catalog import CatalogClient
from services.orders.consumers import subscribe
from services.orders.events import PUBLISHED_EVENTS
from services.orders.health import saga_backlog_probe
from services.orders.keys import ORDERS_SERVICE, SAGA_RUNNER
from services.orders.metrics import OrderMetrics
from services.orders.payment import PaymentProvider, SimulatedPaymentProvider, check_provider
from services.orders.repository import OrdersRepository
from services.orders.saga import SagaRunner
from services.orders.service import OrdersService
from services.orders.settings import Settings

__all__ = ["create_orders_app", "transport_for"]

CATALOG_SESSION = web.AppKey("orders_catalog_session", aiohttp.ClientSession)
CATALOG = web.AppKey("orders_catalog", CatalogClient)


def transport_for(settings: Settings) -> Transport:
    """The bus transport the settings name, on ``settings.bus_exchange`` for AMQP."""
    return make_transport(settings)


def _catalog_ctx(settings: Settings) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.products_timeout),
            raise_for_status=False,
        )
        app[CATALOG_SESSION] = session
        catalog = CatalogClient(
            session,
            settings.products_url,
            resolver=DnsResolver(settings.discovery_nameservers),
            discovery_interval=settings.discovery_interval,
        )
        app[CATALOG] = catalog
        try:
            await catalog.start()
            yield
        finally:
            await catalog.stop()
            await session.close()

    return ctx


def _service_ctx(settings: Settings, provider: PaymentProvider | None) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        repository = OrdersRepository(app[DB_POOL])
        metrics = OrderMetrics(app[METRICS].registry)
        service = OrdersService(
            repository,
            outbox=app[OUTBOX],
            catalog=app[CATALOG],
            settings=settings,
            metrics=metrics,
            cache=app[CACHE] if settings.cache_enabled else None,
        )
        app[ORDERS_SERVICE] = service
        app[HEALTH].add_detail(
            "saga_backlog",
            saga_backlog_probe(
                app[DB_POOL],
                metrics,
                pending_warn=settings.health_saga_backlog_warn,
                age_warn=settings.health_saga_age_warn,
            ),
        )

        async def figures(app: web.Application) -> dict[str, Any]:
            return await repository.business_figures()

        add_figures(app, figures, every=2.0)
        app[SAGA_RUNNER] = SagaRunner(
            service,
            provider or SimulatedPaymentProvider(app[DB_POOL]),
            poll_interval=settings.saga_poll_interval,
            lease=settings.saga_lease,
        )
        yield

    return ctx


async def _saga_ctx(app: web.Application) -> AsyncIterator[None]:
    runner = app[SAGA_RUNNER]
    await runner.start()
    try:
        yield
    finally:
        await runner.stop()


def create_orders_app(
    settings: Settings | None = None,
    *,
    transport: Transport | None = None,
    payment: PaymentProvider | None = None,
) -> web.Application:
    """The orders service application.

    ``transport``: share a bus transport (e.g. in memory); ``payment``: another provider than
    the simulated one, which production refuses (see ``Settings.allow_simulated_payments``).
    """
    settings = settings or Settings()
    check_provider(
        env=settings.env, allow_simulated=settings.allow_simulated_payments, provider=payment
    )

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
        _catalog_ctx(settings),
    ]
    resources.append(
        bus_ctx(settings, setup=declare, transport=transport or transport_for(settings))
    )
    if settings.cache_enabled:  # after the bus: its invalidations are broadcasts on it
        resources.append(cache_ctx(settings, invalidation="bus"))
    resources += [
        _service_ctx(settings, payment),
        bus_workers_ctx(settings.database_url),
        _saga_ctx,
    ]
    return create_app(
        "orders",
        settings,
        routers=[router],
        resources=resources,
        title="aioshop orders",
        description="Orders: an event-sourced aggregate, an orchestrated saga, a read model.",
    )

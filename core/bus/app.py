"""Wiring the bus into a core application: the bus itself, the outbox and its relay."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from core.bus.bus import Bus
from core.bus.memory import InMemoryTransport
from core.bus.metrics import BusMetrics
from core.bus.outbox import Outbox, OutboxRelay
from core.bus.transport import Transport
from core.keys import BUS, DB_POOL, HEALTH, METRICS, OUTBOX, SERVICE_NAME
from core.settings import BaseServiceSettings

__all__ = ["bus_ctx", "make_transport", "outbox_ctx"]

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]
Setup = Callable[[web.Application, Bus], None]


def make_transport(settings: BaseServiceSettings) -> Transport:
    """The transport ``settings.bus_transport`` names."""
    if settings.bus_transport == "memory":
        return InMemoryTransport()
    from core.bus.amqp import AmqpTransport

    return AmqpTransport(settings.amqp_url, publish_timeout=settings.bus_publish_timeout)


def bus_ctx(
    settings: BaseServiceSettings,
    *,
    setup: Setup | None = None,
    transport: Transport | None = None,
) -> CleanupCtx:
    """A ``cleanup_ctx`` that starts ``app[BUS]``.

    ``setup(app, bus)`` runs first, to declare publications and subscriptions (it may read other
    resources from ``app``). Pass ``transport`` to share one (the single-process mode shares an
    ``InMemoryTransport`` between services).
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        bus = Bus(
            transport or make_transport(settings),
            source=app[SERVICE_NAME],
            metrics=BusMetrics(app[METRICS].registry),
        )
        app[BUS] = bus
        if setup is not None:
            setup(app, bus)
        await bus.start()

        async def check() -> None:
            if not bus.transport.connected:
                raise ConnectionError("the bus is not connected")

        app[HEALTH].add("bus", check)
        try:
            yield
        finally:
            app[HEALTH].remove("bus")
            await bus.stop()

    return ctx


def outbox_ctx(dsn: str, *, poll_interval: float = 1.0) -> CleanupCtx:
    """A ``cleanup_ctx`` giving ``app[OUTBOX]`` and running its relay (after the pool and bus)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        bus = app[BUS]
        app[OUTBOX] = Outbox(app[SERVICE_NAME])
        relay = OutboxRelay(app[DB_POOL], bus, dsn=dsn, poll_interval=poll_interval)
        await relay.start()
        try:
            yield
        finally:
            await relay.stop()

    return ctx

"""Wiring the bus into a core application: the bus itself, the outbox and its relay, and the
companions that run while the bus is connected (``core.snapshot``'s publisher is one)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol

from aiohttp import web

from core.bus.amqp import AmqpTransport
from core.bus.bus import Bus
from core.bus.events import Event
from core.bus.memory import InMemoryTransport
from core.bus.metrics import BusMetrics
from core.bus.outbox import Outbox
from core.bus.relay import OutboxRelay
from core.bus.transport import Transport
from core.health import HEALTH
from core.keys import DB_POOL, SERVICE_NAME, SETTINGS
from core.metrics import METRICS
from core.settings import BaseServiceSettings

__all__ = [
    "BUS",
    "BUS_COMPANIONS",
    "OUTBOX",
    "OUTBOX_RELAY",
    "BusCompanion",
    "bus_ctx",
    "bus_workers_ctx",
    "make_transport",
]

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]
Setup = Callable[[web.Application, Bus], None]


class BusCompanion(Protocol):
    """A part of an app that runs while its bus is connected: listed in ``app[BUS_COMPANIONS]``
    before start-up, it is started once the bus connects and stopped before it closes."""

    def publishes(self) -> tuple[type[Event], ...]:
        """The event types it publishes (declared on the bus, so they appear in AsyncAPI)."""
        ...

    def start(self, bus: Bus) -> None:
        """Begin (the bus is connected)."""
        ...

    async def stop(self) -> None:
        """End (the bus is still connected)."""
        ...


BUS = web.AppKey("bus", Bus)
OUTBOX = web.AppKey("outbox", Outbox)
OUTBOX_RELAY = web.AppKey("outbox_relay", OutboxRelay)
BUS_COMPANIONS: web.AppKey[list[BusCompanion]] = web.AppKey("bus_companions")


def make_transport(settings: BaseServiceSettings) -> Transport:
    """The transport ``settings.bus_transport`` names."""
    if settings.bus_transport == "memory":
        return InMemoryTransport()
    # Imported with the module, not here: aiormq's first import reads its package metadata
    # from disk, a blocking call inside the event loop that builds the app.
    return AmqpTransport(
        settings.amqp_url,
        exchange=settings.bus_exchange,
        publish_timeout=settings.bus_publish_timeout,
        drain_timeout=settings.shutdown_timeout,  # handlers in flight at a stop
        queue_type=settings.bus_queue_type,
        delivery_limit=settings.bus_delivery_limit,
    )


def bus_ctx(
    settings: BaseServiceSettings,
    *,
    setup: Setup | None = None,
    transport: Transport | None = None,
    ready_check: bool = True,
) -> CleanupCtx:
    """A ``cleanup_ctx`` giving ``app[BUS]`` (connected, publishing) and ``app[OUTBOX]``.

    While the bus is up, the app's ``BUS_COMPANIONS`` run (the ``metrics.snapshot`` publisher
    of ``core.snapshot`` in every app made by ``create_app``).

    ``setup(app, bus)`` runs first, to declare publications and subscriptions. Nothing is
    consumed and nothing relayed until ``bus_workers_ctx``, which goes last in the resources, so
    that handlers never run before the service they call exists, nor after it is torn down.
    Pass ``transport`` to share one (the single-process mode shares an ``InMemoryTransport``).
    ``ready_check=False`` keeps the bus out of ``/readyz``: for an app that only publishes its
    own snapshots on it (the gateway), and must not stop serving when the broker is away.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        bus = Bus(
            transport or make_transport(settings),
            source=app[SERVICE_NAME],
            metrics=BusMetrics(app[METRICS].registry),
        )
        app[BUS] = bus
        app[OUTBOX] = bus.outbox
        companions = list(app.get(BUS_COMPANIONS, ()))
        for companion in companions:
            bus.declare_publishes(*companion.publishes())
        if setup is not None:
            setup(app, bus)
        await bus.connect()
        for companion in companions:
            companion.start(bus)

        async def check() -> None:
            if not bus.transport.connected:
                raise ConnectionError("the bus is not connected")

        if ready_check:
            app[HEALTH].add("bus", check)
        try:
            yield
        finally:
            for companion in reversed(companions):
                await companion.stop()
            if ready_check:
                app[HEALTH].remove("bus")
            await bus.stop()

    return ctx


def bus_workers_ctx(
    dsn: str | None, *, poll_interval: float = 1.0, flush_timeout: float | None = None
) -> CleanupCtx:
    """A ``cleanup_ctx``, last in the resources: the outbox relay (when ``dsn`` is given) and the
    consumers run while the app runs, and stop first at shutdown, in the order of a drain: the
    consumers take no more messages and their handlers in progress finish, then the relay sends
    every outbox row committed so far (for at most ``flush_timeout`` seconds, default the app's
    ``SHUTDOWN_TIMEOUT``), then the bus disconnects."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        bus = app[BUS]
        relay = None
        if dsn is not None:
            relay = OutboxRelay(app[DB_POOL], bus, dsn=dsn, poll_interval=poll_interval)
            app[OUTBOX_RELAY] = relay
            await relay.start()
        try:
            await bus.start_consuming()
            yield
        finally:
            try:
                await bus.stop_consuming()
                if relay is not None:
                    settings = app.get(SETTINGS)
                    bound = flush_timeout
                    if bound is None:
                        bound = settings.shutdown_timeout if settings is not None else 10.0
                    await relay.flush(bound)
            finally:
                if relay is not None:
                    await relay.stop()
                await bus.stop()

    return ctx

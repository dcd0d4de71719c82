"""Bus test kit: buses on a real transport (in memory or RabbitMQ), isolated per test.

A ``BusKit`` hands out buses on one transport of its own: in memory, a shared
``InMemoryTransport``; on RabbitMQ, an exchange named for the test (so another test's events
never reach it), whose durable queues and exchange are deleted when the kit closes. With it, a
consumer test is a few lines::

    async def test_reserves(memory_bus_kit: BusKit, pool: asyncpg.Pool) -> None:
        bus = memory_bus_kit.bus("products")
        bus.consume(on_order_placed, inbox=Inbox(pool, consumer="products"))
        await bus.start()
        await memory_bus_kit.publish_and_wait(OrderPlaced(...), until=reserved_in_the_db)

``record`` subscribes a log of envelopes (a broadcast subscription, so it takes nothing from a
service's queue) whose ``one``/``wait`` wait with a deadline for what a handler published.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from core.bus.amqp import AmqpTransport
from core.bus.bus import Bus
from core.bus.events import Envelope, Event, EventRegistry
from core.bus.memory import InMemoryTransport
from core.bus.transport import BroadcastSubscription, ParkedMessage, Transport
from core.testing.helpers import wait_for

__all__ = ["DEFAULT_AMQP", "BusKit", "EventLog", "Received"]

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"

E = TypeVar("E", bound=Event)
T = TypeVar("T")

Kind = Literal["memory", "amqp"]


@dataclass(frozen=True, slots=True)
class Received(Generic[E]):
    """An event a log received, with its envelope (correlation, causation, source)."""

    event: E
    envelope: Envelope


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


class EventLog:
    """Every envelope matching some patterns since ``BusKit.record``; typed look-ups."""

    def __init__(self, events: Sequence[type[Event]]) -> None:
        self.envelopes: list[Envelope] = []
        self.registry = EventRegistry()
        self.registry.register_all(events, "consumes")
        self.subscription: BroadcastSubscription | None = None

    async def add(self, envelope: Envelope) -> None:
        """Record ``envelope`` (the broadcast handler)."""
        self.envelopes.append(envelope)

    def of(self, event_cls: type[E], **data: Any) -> list[Received[E]]:
        """The received events of ``event_cls`` whose data has these (JSON-compared) values."""
        wanted = {k: _jsonable(v) for k, v in data.items()}
        found: list[Received[E]] = []
        for envelope in self.envelopes:
            if (envelope.type, envelope.version) != event_cls.key():
                continue
            if all(envelope.data.get(k) == v for k, v in wanted.items()):
                event = self.registry.resolve(envelope)
                if isinstance(event, event_cls):
                    found.append(Received(event, envelope))
        return found

    async def wait(
        self, event_cls: type[E], *, count: int = 1, within: float = 5.0, **data: Any
    ) -> list[Received[E]]:
        """Wait until at least ``count`` such events arrived; fail after ``within`` seconds."""

        async def arrived() -> list[Received[E]]:
            found = self.of(event_cls, **data)
            return found if len(found) >= count else []

        return await wait_for(arrived, within=within)

    async def one(self, event_cls: type[E], *, within: float = 5.0, **data: Any) -> Received[E]:
        """Wait for such an event; fail unless exactly one arrived."""
        found = await self.wait(event_cls, within=within, **data)
        assert len(found) == 1, f"{len(found)} {event_cls.event_type} events match {data}"
        return found[0]


class BusKit:
    """Buses on one isolated transport; ``close`` stops them and deletes what they declared."""

    def __init__(self, kind: Kind, *, amqp_url: str | None = None) -> None:
        self.kind = kind
        self.amqp_url = amqp_url or os.environ.get("TEST_AMQP_URL", DEFAULT_AMQP)
        self.exchange = self.name("exchange") if kind == "amqp" else Transport.exchange
        self._memory = InMemoryTransport(shared=True) if kind == "memory" else None
        self._transports: list[AmqpTransport] = []
        self._buses: list[Bus] = []
        self._publisher: Bus | None = None

    @staticmethod
    def name(label: str = "q") -> str:
        """A queue (or any other) name no other test uses."""
        return f"test.{label}.{uuid.uuid4().hex[:12]}"

    def transport(self) -> Transport:
        """A transport of the kit: the shared in-memory one, or a new AMQP one on the kit's
        exchange (fast reconnects); hand it to an app (``transport=``) or a ``Bus``."""
        if self._memory is not None:
            return self._memory
        transport = AmqpTransport(
            self.amqp_url,
            exchange=self.exchange,
            reconnect_delays=(0.05, 0.5),
            drain_timeout=5,
        )
        self._transports.append(transport)
        return transport

    def bus(self, source: str = "test") -> Bus:
        """A new bus (not started) on a transport of the kit; stopped by ``close``."""
        bus = Bus(self.transport(), source=source)
        self._buses.append(bus)
        return bus

    async def publisher(self) -> Bus:
        """The kit's own started bus, for publishing."""
        if self._publisher is None:
            self._publisher = self.bus("test-publisher")
            await self._publisher.connect()
        return self._publisher

    async def publish(self, event: Event) -> Envelope:
        """Publish ``event`` now (confirmed); return its envelope."""
        return await (await self.publisher()).publish(event)

    async def publish_envelope(self, envelope: Envelope) -> None:
        """Publish a ready envelope (a redelivery, a hand-made invalid one)."""
        await (await self.publisher()).publish_envelope(envelope)

    async def publish_and_wait(
        self, event: Event, until: Callable[[], Awaitable[T]], *, within: float = 5.0
    ) -> T:
        """Publish ``event``, then wait until ``until()`` returns something truthy (a
        handler's effect is visible); return it, or fail after ``within`` seconds."""
        await self.publish(event)
        return await wait_for(until, within=within)

    async def record(self, *events: type[Event], patterns: Sequence[str] | None = None) -> EventLog:
        """A log of every envelope of ``events`` (or matching ``patterns``) from now on."""
        log = EventLog(events)
        bus = self.bus("test-recorder")
        await bus.connect()
        log.subscription = await bus.broadcast_envelopes(
            patterns or sorted({e.event_type for e in events}), log.add
        )
        return log

    async def parked(self, queue: str) -> list[ParkedMessage]:
        """The parked messages of ``queue``."""
        return await (await self.publisher()).transport.parked(queue)

    async def close(self) -> None:
        """Stop every bus of the kit and delete the durable queues and exchange they used."""
        for bus in reversed(self._buses):
            await bus.stop()
        if self._memory is not None:
            await self._memory.close()
            return
        queues = sorted({q for t in self._transports for q in t.declared_queues()})
        cleaner = AmqpTransport(self.amqp_url, exchange=self.exchange, connect_timeout=5)
        await cleaner.start()
        try:
            await cleaner.delete_topology(queues, exchange=True)
        finally:
            await cleaner.stop()

"""What only the in-memory transport has: sharing one transport between apps (embedded mode)."""

from __future__ import annotations

import asyncio

import pytest

from core.bus import Bus, Delivery, Event, Incoming, InMemoryTransport
from core.testing import wait_for
from tests.core.bus.conftest import holds

pytestmark = pytest.mark.unit


class Tick(Event):
    """An event of this test."""

    event_type = "memory.tick"

    n: int


async def test_a_shared_transport_outlives_its_buses_and_drains_before_it_closes() -> None:
    transport = InMemoryTransport(shared=True)
    publisher = Bus(transport, source="publisher")
    consumer = Bus(transport, source="consumer")
    handled: list[int] = []
    gate = asyncio.Event()

    async def slow(event: Tick, ctx: Delivery) -> None:
        await gate.wait()
        handled.append(event.n)

    consumer.consume(slow, queue="ticks")
    await consumer.start()
    await publisher.start()
    for n in range(20):
        await publisher.publish(Tick(n=n))

    await publisher.stop()  # one app shutting down leaves the others' messages alone
    assert transport.connected
    assert not transport.idle
    assert not await transport.drain(within=0.3)  # the handler is held: still busy

    gate.set()
    assert await transport.drain(within=5)
    assert sorted(handled) == list(range(20))
    await transport.close()
    assert not transport.connected
    await consumer.stop()


async def test_an_unshared_transport_stops_with_its_bus() -> None:
    transport = InMemoryTransport()
    bus = Bus(transport, source="alone")
    await bus.start()
    assert transport.connected
    await bus.stop()
    assert not transport.connected


async def test_a_broadcast_subscriber_keeps_only_the_newest_messages_when_behind() -> None:
    transport = InMemoryTransport()
    await transport.start()
    gate = asyncio.Event()
    got: list[str | None] = []

    async def slow(message: Incoming) -> None:
        got.append(message.message_id)
        await gate.wait()

    subscription = await transport.broadcast(["memory.#"], slow, max_length=2)
    await transport.publish("memory.x", b"{}", message_id="0")
    await wait_for(holds(lambda: got == ["0"]), within=5)  # taken, held by the handler
    for n in range(1, 6):
        await transport.publish("memory.x", b"{}", message_id=str(n))
    gate.set()
    await wait_for(holds(lambda: len(got) == 3), within=5)
    assert got == ["0", "4", "5"]  # the oldest waiting ones were dropped
    await subscription.stop()
    await transport.publish("memory.x", b"{}", message_id="late")
    assert await transport.drain(within=5, quiet=0.05)
    assert got == ["0", "4", "5"]
    await transport.close()

"""What only the in-memory transport has: sharing one transport between apps (embedded mode)."""

from __future__ import annotations

import asyncio

from core.bus import Bus, Event, InMemoryTransport, Message


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

    async def slow(message: Message) -> None:
        assert isinstance(message.event, Tick)
        await gate.wait()
        handled.append(message.event.n)

    consumer.subscribe(Tick.event_type, slow, queue="ticks", events=[Tick])
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

"""The bus test kit of core.testing: isolated buses, publish-and-wait, event logs, cleanup."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiormq
import pytest

from core.bus import Delivery, Envelope, Event
from core.testing import BusKit
from tests.core.bus.conftest import AMQP_URL


class Asked(Event):
    """A question (consumed)."""

    event_type = "kit.asked"

    n: int


class Answered(Event):
    """Its answer (published by the consumer)."""

    event_type = "kit.answered"

    n: int
    square: int


async def test_a_consumer_is_tested_in_a_few_lines(bus_kit: BusKit) -> None:
    answers = await bus_kit.record(Answered)
    bus = bus_kit.bus("squares")

    async def on_asked(event: Asked, ctx: Delivery) -> None:
        await bus.publish(Answered(n=event.n, square=event.n**2))

    bus.consume(on_asked, queue=bus_kit.name("squares"))
    await bus.start()

    asked = await bus_kit.publish(Asked(n=7))
    answer = await answers.one(Answered, n=7, within=10)
    assert answer.event.square == 49
    assert answer.envelope.causation_id == str(asked.id)
    assert answer.envelope.source == "squares"
    assert answers.of(Answered, n=8) == []


async def test_publish_and_wait_fails_when_the_effect_never_shows(
    memory_bus_kit: BusKit,
) -> None:
    async def never() -> bool:
        return False

    with pytest.raises(AssertionError, match="not met"):
        await memory_bus_kit.publish_and_wait(Asked(n=1), until=never, within=0.2)


async def _exists(channel: aiormq.abc.AbstractChannel, queue: str) -> bool:
    try:
        await channel.queue_declare(queue, passive=True)
    except aiormq.ChannelNotFoundEntity:
        return False
    return True


async def test_the_amqp_kit_deletes_its_queues_and_exchange() -> None:
    kit = BusKit("amqp", amqp_url=AMQP_URL)
    bus = kit.bus("cleaned")
    queue = kit.name("cleaned")

    async def on_asked(event: Asked, ctx: Delivery) -> None: ...

    bus.consume(on_asked, queue=queue)
    await bus.start()
    assert f"{queue}.parked" in bus.transport.declared_queues()  # type: ignore[attr-defined]
    await kit.close()

    async with aiormq.connect(AMQP_URL) as connection:
        for name in (queue, f"{queue}.parked", f"{queue}.retry.1000"):
            assert not await _exists(await connection.channel(), name)
        channel = await connection.channel()
        with pytest.raises(aiormq.ChannelNotFoundEntity):
            await channel.exchange_declare(kit.exchange, exchange_type="topic", passive=True)


class Invalidated(Event):
    """A core-style broadcast event: every instance drops these keys."""

    event_type = "kit.invalidated"

    keys: list[str]


async def test_every_instance_gets_a_typed_broadcast(bus_kit: BusKit) -> None:
    got: dict[str, list[list[str]]] = {"a": [], "b": []}
    instances = [bus_kit.bus("cache"), bus_kit.bus("cache")]
    for label, bus in zip(("a", "b"), instances, strict=True):
        await bus.connect()

        def receiver(
            label: str,
        ) -> Callable[[Invalidated, Envelope], Awaitable[None]]:
            async def on_invalidated(event: Invalidated, envelope: Envelope) -> None:
                got[label].append(event.keys)

            return on_invalidated

        await bus.broadcast(receiver(label))
    assert [s.events for s in instances[0].broadcasts] == [(Invalidated,)]

    await bus_kit.publish_envelope(
        Envelope(type="kit.invalidated", source="t", data={"keys": "not a list"})
    )

    async def both() -> bool:
        return got == {"a": [["k1", "k2"]], "b": [["k1", "k2"]]}

    # The invalid one is dropped (logged), the valid one reaches each instance once.
    await bus_kit.publish_and_wait(Invalidated(keys=["k1", "k2"]), until=both, within=10)

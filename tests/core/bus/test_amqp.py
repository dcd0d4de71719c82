"""What only the AMQP transport does: the wire format, an unreachable broker, lost connections."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiormq
import pytest

from core.bus.amqp import AmqpTransport, delay_queue_name
from core.bus.amqp.broadcast import AmqpBroadcast
from core.bus.transport import (
    BusError,
    Incoming,
    PublishError,
    PublishTimeout,
    RetryPolicy,
    Transport,
)
from core.testing import wait_for
from tests.core.bus.conftest import (
    AMQP_URL,
    UNREACHABLE_AMQP_URL,
    BrokerProxy,
    close_named_connections,
    holds,
    rabbitmqctl,
    unique,
)

Cleanup = list[tuple[str, Any]]


@pytest.fixture
async def transport() -> AsyncIterator[AmqpTransport]:
    """A started transport on the real broker, on the real ``aioshop.events`` exchange."""
    transport = AmqpTransport(AMQP_URL, publish_timeout=5, reconnect_delays=(0.05, 0.2))
    await transport.start()
    yield transport
    await transport.stop()


async def test_publish_reaches_an_outside_consumer(transport: AmqpTransport) -> None:
    """An outside service binds its own queue to the exchange and gets persistent JSON."""
    key = unique("outside.event")
    message_id = uuid.uuid4().hex
    received: asyncio.Future[aiormq.abc.DeliveredMessage] = (
        asyncio.get_running_loop().create_future()
    )

    async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
        assert message.delivery_tag is not None
        await message.channel.basic_ack(message.delivery_tag)
        if not received.done():
            received.set_result(message)

    async with aiormq.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        declared = await channel.queue_declare(exclusive=True, auto_delete=True)
        assert declared.queue is not None
        await channel.queue_bind(declared.queue, Transport.exchange, routing_key=key)
        await channel.basic_consume(declared.queue, on_message)

        await transport.publish(
            key, b'{"hello": "world"}', message_id=message_id, headers={"x-source": "tests"}
        )

        async with asyncio.timeout(10):
            message = await received
    properties = message.header.properties
    assert message.body == b'{"hello": "world"}'
    assert message.routing_key == key
    assert message.exchange == Transport.exchange
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"
    assert properties.message_id == message_id
    assert properties.headers == {"x-source": "tests"}


async def test_publish_without_a_broker_raises_instead_of_hanging() -> None:
    transport = AmqpTransport(
        UNREACHABLE_AMQP_URL, publish_timeout=0.5, reconnect_delays=(0.05,), connect_timeout=1
    )
    await transport.start()  # returns after the first (failed) attempt
    try:
        assert not transport.connected

        async def never_called(message: Incoming) -> None:
            raise AssertionError("nothing can arrive")

        await transport.consume(unique("q"), ["#"], never_called)  # registered for later
        with pytest.raises(PublishError):
            await transport.publish("order.placed", b"{}", message_id=uuid.uuid4().hex)
        with pytest.raises(PublishError):
            await transport.publish("order.placed", b"{}", message_id=uuid.uuid4().hex)
    finally:
        await transport.stop()


async def test_a_confirm_that_never_comes_times_out(broker_proxy: BrokerProxy) -> None:
    """The connection stays open but the broker answers nothing: the publish gives up."""
    transport = AmqpTransport(broker_proxy.url, publish_timeout=0.5, reconnect_delays=(0.05,))
    await transport.start()
    try:
        await transport.publish(unique("fine"), b"{}", message_id=uuid.uuid4().hex)
        broker_proxy.freeze()
        with pytest.raises(PublishTimeout):
            await transport.publish(unique("stuck"), b"{}", message_id=uuid.uuid4().hex)
        broker_proxy.thaw()
        await transport.publish(unique("fine"), b"{}", message_id=uuid.uuid4().hex)
    finally:
        broker_proxy.thaw()
        await transport.stop()


async def test_consumers_and_publishers_survive_lost_connections(
    amqp_cleanup: Cleanup,
) -> None:
    """Kill the connection twice while 200 events flow each time: none is lost.

    The producer retries a failed publish after a short pause, as the outbox relay does; the
    consumer deduplicates by message id, as the inbox does. The consumer comes back by itself.
    """
    name = unique("conn")
    transport = AmqpTransport(
        f"{AMQP_URL}?name={name}",
        publish_timeout=2,
        reconnect_delays=(0.05, 0.1, 0.2, 0.5),
        drain_timeout=5,
    )
    key, queue = unique("survivor"), unique("survivor")
    amqp_cleanup.append((queue, (0.1,)))
    handled: set[str] = set()
    deliveries = 0

    async def handle(message: Incoming) -> None:
        nonlocal deliveries
        deliveries += 1
        assert message.message_id is not None
        await asyncio.sleep(0.001)  # some work, so that deliveries are in flight at the kill
        if message.attempt == 1 and int(message.message_id, 16) % 10 == 0:
            raise RuntimeError("a tenth fail once, so retries cross the kills too")
        handled.add(message.message_id)

    async def produce(ids: list[str], pace_after: int, hold_at: int, killed: asyncio.Event) -> int:
        failures = 0
        for i, message_id in enumerate(ids):
            if i == hold_at:
                # The rest of the stream waits for the kill, so that it always lands mid-way
                # (rabbitmqctl takes longer than publishing 200 events).
                await asyncio.wait_for(killed.wait(), 30)
            while True:
                try:
                    await transport.publish(key, b"{}", message_id=message_id)
                    break
                except PublishError:
                    failures += 1
                    await asyncio.sleep(0.05)  # the relay's retry pause
            if i >= pace_after:
                await asyncio.sleep(0.005)  # a steady stream, so that the kill lands mid-way
        return failures

    async def run_round(killed_before: set[str]) -> set[str]:
        ids = {uuid.uuid4().hex for _ in range(200)}
        killed = asyncio.Event()
        producer = asyncio.create_task(produce(sorted(ids), 50, 150, killed))
        await wait_for(holds(lambda: len(handled & ids) >= 50), within=20)

        pids = await close_named_connections(name)
        killed.set()
        assert pids, "no connection of the transport to kill"
        assert not killed_before & set(pids), "the killed connection was not replaced"
        handled_at_kill = len(handled & ids)

        async with asyncio.timeout(60):
            await producer
        await wait_for(holds(lambda: ids <= handled), within=60)
        assert handled_at_kill < len(ids), "the kill came too late to prove anything"
        await wait_for(holds(lambda: transport.connected), within=10)
        return set(pids)

    await transport.start()
    try:
        await transport.consume(queue, [key], handle, prefetch=16, retry=RetryPolicy((0.1,)))
        killed: set[str] = set()
        for _ in range(2):
            killed |= await run_round(killed)
        # Every event was handled; some more than once (the price of at-least-once), none lost.
        assert deliveries >= 400
        assert await transport.parked(queue) == []
    finally:
        await transport.stop()


async def test_recovers_when_the_broker_goes_away_and_comes_back(
    broker_proxy: BrokerProxy, amqp_cleanup: Cleanup
) -> None:
    """Sockets die without a goodbye and connections are refused for a while, then the broker
    is back: publishing fails meanwhile (within the publish timeout), and the consumer resumes
    by itself."""
    transport = AmqpTransport(
        broker_proxy.url, publish_timeout=0.5, reconnect_delays=(0.05, 0.1, 0.2), drain_timeout=5
    )
    key, queue = unique("outage"), unique("outage")
    amqp_cleanup.append((queue, RetryPolicy().delays))
    received: list[str | None] = []

    async def handle(message: Incoming) -> None:
        received.append(message.message_id)

    await transport.start()
    try:
        await transport.consume(queue, [key], handle)
        await transport.publish(key, b"{}", message_id="before")
        await wait_for(holds(lambda: received == ["before"]), within=10)

        await broker_proxy.cut()
        await wait_for(holds(lambda: not transport.connected), within=10)
        with pytest.raises(PublishError):
            await transport.publish(key, b"{}", message_id="during")

        await broker_proxy.start()
        await wait_for(holds(lambda: transport.connected), within=10)
        await transport.publish(key, b"{}", message_id="after")
        await wait_for(holds(lambda: "after" in received), within=10)
        # "before" may come twice: its ack can be lost in the cut (at least once).
        assert set(received) == {"before", "after"}
    finally:
        await transport.stop()


async def test_consumer_comes_back_after_its_queue_was_deleted(
    amqp_cleanup: Cleanup, transport: AmqpTransport
) -> None:
    """The broker cancels a consumer whose queue is deleted; the transport re-declares the
    queue with its bindings and consumes again."""
    key, queue = unique("deleted"), unique("deleted")
    amqp_cleanup.append((queue, RetryPolicy().delays))
    received: list[str | None] = []

    async def handle(message: Incoming) -> None:
        received.append(message.message_id)

    await transport.consume(queue, [key], handle)
    async with aiormq.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)

        async def queue_is_back() -> bool:
            probe = await connection.channel()
            try:
                await probe.queue_declare(queue, passive=True)
            except aiormq.ChannelNotFoundEntity:
                return False
            await probe.close()
            return True

        await wait_for(queue_is_back, within=10)

    async def delivered() -> bool:
        # Until the consumer is back on the re-declared queue, a publish may still find it
        # without a consumer: it waits there, so one publish suffices.
        return received == ["again"]

    await transport.publish(key, b"{}", message_id="again")
    await wait_for(delivered, within=10)


async def test_a_deleted_delay_queue_is_restored_and_the_retry_still_happens(
    amqp_cleanup: Cleanup, transport: AmqpTransport
) -> None:
    key, queue = unique("ladder"), unique("ladder")
    amqp_cleanup.append((queue, (0.1,)))
    attempts: list[int] = []

    async def handle(message: Incoming) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            raise RuntimeError("first attempt fails")

    await transport.consume(queue, [key], handle, retry=RetryPolicy((0.1,)))
    async with aiormq.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        await channel.queue_delete(delay_queue_name(queue, 0.1))

    await transport.publish(key, b"{}", message_id=uuid.uuid4().hex)
    await wait_for(holds(lambda: attempts[-1:] == [2]), within=15)
    # The copy to the missing delay queue was refused, so the original was given back and
    # tried again (attempt 1 twice) instead of being lost or acknowledged.
    assert attempts == [1, 1, 2]


async def test_a_conflicting_queue_is_refused_and_the_transport_carries_on(
    amqp_cleanup: Cleanup, transport: AmqpTransport
) -> None:
    queue = unique("conflict")
    amqp_cleanup.append((queue, RetryPolicy().delays))
    async with aiormq.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        await channel.queue_declare(queue, durable=True, arguments={"x-max-length": 10})

    async def handle(message: Incoming) -> None:
        raise AssertionError("never consumed")

    with pytest.raises(BusError):
        await transport.consume(queue, [unique("key")], handle)
    assert transport.connected
    await transport.publish(unique("still.fine"), b"{}", message_id=uuid.uuid4().hex)


async def _queue_exists(name: str) -> bool:
    async with aiormq.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        try:
            await channel.queue_declare(name, passive=True)
        except aiormq.ChannelNotFoundEntity:
            return False
        except aiormq.ChannelLockedResource:
            return True  # exclusive to its owner's connection, but there
        return True


async def _published_again_until_received(
    transport: AmqpTransport, key: str, received: list[str | None]
) -> None:
    """Until its queue is declared again, what is published to a broadcast is lost: keep
    publishing until one of these messages arrives (within 15 s)."""

    async def back() -> bool:
        if not any(r and r.startswith("after") for r in received):
            with contextlib.suppress(PublishError):
                await transport.publish(key, b"{}", message_id=f"after-{uuid.uuid4().hex}")
            return False
        return True

    await wait_for(back, within=15, interval=0.1)


async def test_a_broadcast_subscription_comes_back_after_a_lost_connection() -> None:
    """Its exclusive queue dies with the connection; the transport declares it again (messages
    published meanwhile are lost: telemetry), and deletes it on stop."""
    name = unique("broadcast-conn")
    transport = AmqpTransport(
        f"{AMQP_URL}?name={name}",
        exchange=unique("broadcast-exchange"),
        reconnect_delays=(0.05, 0.2),
    )
    key = unique("pulse")
    received: list[str | None] = []

    async def handle(message: Incoming) -> None:
        received.append(message.message_id)

    await transport.start()
    try:
        subscription = await transport.broadcast([key], handle)
        await transport.publish(key, b"{}", message_id="before")
        await wait_for(holds(lambda: received == ["before"]), within=10)
        assert await _queue_exists(subscription.queue)

        killed = await close_named_connections(name)
        assert killed

        await _published_again_until_received(transport, key, received)
        assert subscription.connected
        await subscription.stop()
        assert not await _queue_exists(subscription.queue)
    finally:
        await transport.delete_topology([], exchange=True)
        await transport.stop()


async def test_a_broadcast_subscription_comes_back_after_the_broker_cancels_it() -> None:
    """An operator deletes its queue (a failed cluster node does the same): the broker cancels
    the consumer while the channel stays open. The subscription says it is not connected,
    declares its queue again and receives what is published afterwards."""
    transport = AmqpTransport(
        AMQP_URL, exchange=unique("broadcast-exchange"), reconnect_delays=(0.05, 0.2)
    )
    key = unique("pulse")
    received: list[str | None] = []

    async def handle(message: Incoming) -> None:
        received.append(message.message_id)

    await transport.start()
    try:
        subscription = await transport.broadcast([key], handle)
        assert isinstance(subscription, AmqpBroadcast)
        await transport.publish(key, b"{}", message_id="before")
        await wait_for(holds(lambda: received == ["before"]), within=10)
        assert subscription.connected

        # Whether it still claims to be connected right after the cancel: looked at on the
        # loop's next turn, after every cancel callback ran and long before a new queue could
        # be declared (that takes round trips to the broker).
        loop = asyncio.get_running_loop()
        seen: list[bool] = []
        channel = subscription._channel
        assert channel is not None
        channel.on_consumer_cancel_callbacks.add(
            lambda _frame: loop.call_soon(lambda: seen.append(subscription.connected))
        )

        # The queue is exclusive: no other connection may delete it, the operator's tool may.
        await rabbitmqctl("delete_queue", subscription.queue)
        await wait_for(holds(lambda: seen), within=10)
        assert seen == [False]

        await _published_again_until_received(transport, key, received)
        assert subscription.connected
        assert await _queue_exists(subscription.queue)
        await subscription.stop()
        assert not await _queue_exists(subscription.queue)
    finally:
        await transport.delete_topology([], exchange=True)
        await transport.stop()

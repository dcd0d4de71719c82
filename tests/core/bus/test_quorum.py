"""Quorum queues (``BUS_QUEUE_TYPE=quorum``) on the real broker: what they add to the contract
that every transport passes (tests/core/bus/test_transport_contract.py runs it on them too)."""

from __future__ import annotations

import aiormq

from core.bus.amqp import AmqpTransport
from core.bus.amqp.common import delay_queue_name, parking_queue_name
from core.bus.transport import Incoming, RetryPolicy
from core.testing import wait_for
from tests.core.bus.conftest import AMQP_URL, BrokerProxy, delete_topology, unique


async def _queue_type(name: str) -> str:
    """The type the broker reports for ``name``: redeclaring a quorum queue as classic fails."""
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        try:
            await channel.queue_declare(name, durable=True)
        except aiormq.ChannelPreconditionFailed:
            return "quorum"
        return "classic"
    finally:
        await connection.close()


async def test_every_durable_queue_is_a_quorum_queue() -> None:
    exchange, queue = unique("events"), unique("q")
    transport = AmqpTransport(AMQP_URL, exchange=exchange, queue_type="quorum")
    await transport.start()
    try:

        async def handle(message: Incoming) -> None:
            return None

        await transport.consume(queue, ["x.#"], handle, retry=RetryPolicy(delays=(0.5,)))
        names = [queue, delay_queue_name(queue, 0.5), parking_queue_name(queue)]
        assert sorted(transport.declared_queues()) == sorted(names)
        for name in names:
            assert await _queue_type(name) == "quorum", name
    finally:
        await transport.stop()
        await delete_topology([(queue, {0.5})], [exchange])


async def test_a_message_that_kills_its_consumer_is_parked_by_the_delivery_limit(
    broker_proxy: BrokerProxy,
) -> None:
    """Each delivery loses the connection before any ack or nack (as a consumer crashing on the
    message): the local attempt counter never moves, the broker's delivery count does, and past
    the limit the message is dead-lettered into the parking queue instead of looping forever."""
    exchange, queue, key = unique("events"), unique("q"), unique("poison")
    transport = AmqpTransport(
        broker_proxy.url,
        exchange=exchange,
        queue_type="quorum",
        delivery_limit=2,
        reconnect_delays=(0.05, 0.1),
        drain_timeout=1,
    )
    deliveries: list[str | None] = []

    async def crash(message: Incoming) -> None:
        deliveries.append(message.message_id)
        await broker_proxy.cut()
        await broker_proxy.start()

    await transport.start()
    try:
        await transport.consume(queue, [key], crash, prefetch=1)
        await transport.publish(key, b"{}", message_id="poison-1", headers={})

        async def parked() -> bool:
            # Asked of the broker directly: the transport's own connection keeps being cut.
            return await _messages(parking_queue_name(queue)) == 1

        await wait_for(parked, within=20)
        # The first delivery and two redeliveries; none after it was parked.
        assert deliveries == ["poison-1"] * 3
        assert await _messages(queue) == 0
    finally:
        await transport.stop()
        await delete_topology([(queue, set())], [exchange])


async def _messages(name: str) -> int:
    """How many messages queue ``name`` holds, asked over a connection of its own."""
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(name, passive=True)
        return int(declared.message_count or 0)
    finally:
        await connection.close()

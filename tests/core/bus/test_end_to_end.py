"""Outbox → relay → RabbitMQ → inbox, with the broker connections killed along the way.

The whole chain the services use: every committed event takes effect exactly once, whatever
the connections do (at-least-once delivery made effectively-once by the inbox).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import aiormq
import asyncpg

from core.bus import Bus, Delivery, Event, Inbox, Message, Outbox, OutboxRelay, RetryPolicy
from core.bus.amqp import AmqpTransport
from core.db import transaction
from core.testing import wait_for
from tests.core.bus.conftest import AMQP_URL, close_named_connections, rabbitmqctl, unique

N = 300


class ItemMade(Event):
    """An event of this test."""

    event_type = "e2e.item_made"

    name: str


async def test_every_committed_event_takes_effect_once_across_connection_kills(
    pool: asyncpg.Pool, bus_dsn: str, amqp_cleanup: list[tuple[str, Iterable[float]]]
) -> None:
    name = unique("e2e-conn")
    queue = unique("e2e")
    # An exchange of this test's own: another test session on the same broker publishes the
    # same event type, and its events must not reach this test's queue.
    exchange = unique("e2e-exchange")
    amqp_cleanup.append((queue, (0.1,)))
    producer = Bus(
        AmqpTransport(
            f"{AMQP_URL}?name={name}", exchange=exchange, reconnect_delays=(0.05, 0.1, 0.2)
        ),
        source="e2e-producer",
    )
    consumer = Bus(
        AmqpTransport(
            f"{AMQP_URL}?name={name}", exchange=exchange, reconnect_delays=(0.05, 0.1, 0.2)
        ),
        source="e2e-consumer",
    )
    deliveries = 0

    async def make(event: ItemMade, ctx: Delivery) -> None:
        await ctx.conn.execute("INSERT INTO things (name) VALUES ($1)", event.name)

    async def counting(message: Message) -> None:
        nonlocal deliveries
        deliveries += 1

    consumer.consume(
        make, queue=queue, inbox=Inbox(pool, consumer="e2e"), retry=RetryPolicy((0.1,))
    )
    consumer.subscribe(ItemMade.event_type, counting, queue=queue)  # sees every delivery
    await consumer.start()
    await producer.start()
    relay = OutboxRelay(pool, producer, dsn=bus_dsn, poll_interval=0.2)
    await relay.start()
    outbox = Outbox(producer.source)
    names = [f"item-{i}-{uuid.uuid4().hex[:6]}" for i in range(N)]
    try:
        for chunk in range(0, N, 10):
            async with transaction(pool) as conn:
                for item in names[chunk : chunk + 10]:
                    await outbox.publish(conn, ItemMade(name=item))
            if chunk in (100, 200):
                # Both the relay's and the consumer's connections go, mid-stream.
                assert await close_named_connections(name)

        async def all_made() -> bool:
            made: int = await pool.fetchval("SELECT count(*) FROM things")
            return made == N

        try:
            await wait_for(all_made, within=60)
        except AssertionError:
            made = await pool.fetchval("SELECT count(*) FROM things")
            pending = await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            queues = await rabbitmqctl(
                "list_queues", "-q", "name", "messages_ready", "messages_unacknowledged"
            )
            mine = [line for line in queues.splitlines() if queue in line]
            raise AssertionError(
                f"made {made}/{N}, outbox pending {pending}, deliveries {deliveries}, "
                f"queues {mine}, connected {producer.transport.connected}/"
                f"{consumer.transport.connected}"
            ) from None
        rows = await pool.fetch("SELECT name FROM things")
        assert sorted(r["name"] for r in rows) == sorted(names)  # each once, none lost

        async def all_marked_sent() -> bool:
            # Consumers may finish before the relay's own transaction marks the rows as sent.
            pending: int = await pool.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            )
            return pending == 0

        await wait_for(all_marked_sent, within=30)
        assert deliveries >= N
        assert producer.transport.connected
        assert consumer.transport.connected
    finally:
        await relay.stop()
        await producer.stop()
        await consumer.stop()
        connection = await aiormq.connect(AMQP_URL)
        try:
            await (await connection.channel()).exchange_delete(exchange)
        finally:
            await connection.close()

"""Transactional outbox and inbox against a real PostgreSQL database (in-memory transport)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import asyncpg
import pytest

from core.bus import (
    Bus,
    Delivery,
    Event,
    Inbox,
    InMemoryTransport,
    Message,
    Outbox,
    OutboxRelay,
    PublishError,
    RetryPolicy,
)
from core.context import correlation_id
from core.db import transaction
from core.testing import wait_for


class ThingCreated(Event):
    """A test event."""

    event_type = "thing.created"

    name: str


class FlakyTransport(InMemoryTransport):
    """Delivers, then reports a lost confirm for the first ``failures`` publishes."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        await super().publish(routing_key, body, message_id=message_id, headers=headers)
        if self.failures > 0:
            self.failures -= 1
            raise PublishError("confirm lost after delivery")


async def _pending(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    return count


async def test_publish_outside_a_transaction_is_refused(pool: asyncpg.Pool) -> None:
    outbox = Outbox("t")
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            await outbox.publish(conn, ThingCreated(name="x"))
    assert await _pending(pool) == 0


async def test_a_rolled_back_transaction_publishes_nothing(pool: asyncpg.Pool) -> None:
    transport = InMemoryTransport()
    source, sink = Bus(transport, source="producer"), Bus(transport, source="consumer")
    received: list[Message] = []

    async def handler(message: Message) -> None:
        received.append(message)

    sink.subscribe("thing.*", handler, events=[ThingCreated])
    await sink.start()
    await source.start()
    outbox = Outbox(source.source)
    relay = OutboxRelay(pool, source, dsn="unused")

    async def write_then_fail() -> None:
        async with transaction(pool) as conn:
            await outbox.publish(conn, ThingCreated(name="ghost"))
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await write_then_fail()
    assert await relay.relay_once() == 0
    async with transaction(pool) as conn:
        await outbox.publish(conn, ThingCreated(name="real"))
    assert await relay.relay_once() == 1
    await wait_for(lambda: _count(received, 1), within=2)
    assert [m.event.name for m in received if isinstance(m.event, ThingCreated)] == ["real"]
    assert await _pending(pool) == 0
    await source.stop()
    await sink.stop()


async def _count(items: list[Any], n: int) -> bool:
    return len(items) >= n


async def test_envelope_carries_the_request_correlation_id(pool: asyncpg.Pool) -> None:
    transport = InMemoryTransport()
    bus = Bus(transport, source="producer")
    received: list[Message] = []

    async def handler(message: Message) -> None:
        received.append(message)

    bus.subscribe("thing.created", handler, queue="listener")
    await bus.start()
    token = correlation_id.set("req-42")
    try:
        async with transaction(pool) as conn:
            envelope = await Outbox(bus.source).publish(conn, ThingCreated(name="c"))
    finally:
        correlation_id.reset(token)
    await OutboxRelay(pool, bus, dsn="unused").relay_once()
    await wait_for(lambda: _count(received, 1), within=2)
    got = received[0].envelope
    assert got.id == envelope.id
    assert got.correlation_id == "req-42"
    assert got.source == "producer"
    assert got.type == "thing.created"
    await bus.stop()


async def test_notify_wakes_the_relay_long_before_its_poll(
    pool: asyncpg.Pool, bus_dsn: str
) -> None:
    transport = InMemoryTransport()
    bus = Bus(transport, source="producer")
    received: list[Message] = []

    async def handler(message: Message) -> None:
        received.append(message)

    bus.subscribe("thing.*", handler, queue="listener")
    await bus.start()
    relay = OutboxRelay(pool, bus, dsn=bus_dsn, poll_interval=60)
    await relay.start()
    try:
        await wait_for(lambda: _listening(relay), within=5)
        async with transaction(pool) as conn:
            await Outbox(bus.source).publish(conn, ThingCreated(name="fast"))
        # A 60 s poll could not deliver within 5 s: only the NOTIFY can.
        await wait_for(lambda: _count(received, 1), within=5)
    finally:
        await relay.stop()
        await bus.stop()


async def _listening(relay: OutboxRelay) -> bool:
    return relay._listener is not None


async def test_a_lost_confirm_resends_and_the_inbox_drops_the_duplicate(
    pool: asyncpg.Pool,
) -> None:
    transport = FlakyTransport(failures=1)
    bus = Bus(transport, source="producer")
    deliveries: list[str] = []
    inbox = Inbox(pool, consumer="things")

    async def make_thing(event: ThingCreated, ctx: Delivery) -> None:
        await ctx.conn.execute("INSERT INTO things (name) VALUES ($1)", event.name)

    async def counting(message: Message) -> None:
        deliveries.append(str(message.envelope.id))

    bus.consume(make_thing, queue="things", inbox=inbox)
    bus.subscribe("thing.created", counting, queue="things")  # sees every delivery
    await bus.start()
    async with transaction(pool) as conn:
        await Outbox(bus.source).publish(conn, ThingCreated(name="only-once"))
    relay = OutboxRelay(pool, bus, dsn="unused")
    with pytest.raises(PublishError):
        await relay.relay_once()  # delivered, but the relay never learnt it: the row stays
    assert await _pending(pool) == 1
    assert await relay.relay_once() == 1  # sent again
    await wait_for(lambda: _count(deliveries, 2), within=2)
    assert len(set(deliveries)) == 1  # the same envelope twice
    assert await pool.fetchval("SELECT count(*) FROM things") == 1
    attempts = await pool.fetchval("SELECT attempts FROM outbox")
    assert attempts == 1
    await bus.stop()


async def test_a_failing_inbox_handler_rolls_back_and_is_retried(pool: asyncpg.Pool) -> None:
    transport = InMemoryTransport()
    bus = Bus(transport, source="producer")
    inbox = Inbox(pool, consumer="retrying")
    calls: list[int] = []
    committed: list[int] = []

    async def flaky(event: ThingCreated, ctx: Delivery) -> None:
        calls.append(ctx.attempt)
        await ctx.conn.execute("INSERT INTO things (name) VALUES ($1)", f"t{ctx.attempt}")
        ctx.after_commit(lambda: committed.append(ctx.attempt))
        if ctx.attempt == 1:
            raise RuntimeError("first try fails after writing")

    bus.consume(flaky, inbox=inbox, retry=RetryPolicy((0.05,)))
    await bus.start()
    await bus.publish(ThingCreated(name="x"))
    await wait_for(lambda: _count(calls, 2), within=3)
    await wait_for(lambda: _things(pool, ["t2"]), within=3)
    assert calls == [1, 2]
    assert committed == [2]  # the rolled-back attempt's after-commit action never ran
    await bus.stop()


async def _things(pool: asyncpg.Pool, expected: list[str]) -> bool:
    rows = await pool.fetch("SELECT name FROM things ORDER BY name")
    return [r["name"] for r in rows] == expected


async def test_two_relays_share_the_table_and_every_event_takes_effect_once(
    pool: asyncpg.Pool,
) -> None:
    transport = InMemoryTransport()
    bus = Bus(transport, source="producer")
    inbox = Inbox(pool, consumer="many")

    async def make_thing(event: ThingCreated, ctx: Delivery) -> None:
        await ctx.conn.execute("INSERT INTO things (name) VALUES ($1)", event.name)

    bus.consume(make_thing, queue="many", inbox=inbox)
    await bus.start()
    outbox = Outbox(bus.source)
    for batch in range(4):
        async with transaction(pool) as conn:
            for i in range(50):
                await outbox.publish(conn, ThingCreated(name=f"n{batch}-{i}"))
    relays = [OutboxRelay(pool, bus, dsn="unused", batch_size=20) for _ in range(2)]

    async def drain(relay: OutboxRelay) -> int:
        total = 0
        while sent := await relay.relay_once():
            total += sent
        return total

    sent = await asyncio.gather(*(drain(r) for r in relays))
    assert sum(sent) == 200  # SKIP LOCKED: no row sent by both
    assert await _pending(pool) == 0
    await wait_for(lambda: _thing_count(pool, 200), within=5)
    await bus.stop()


async def _thing_count(pool: asyncpg.Pool, n: int) -> bool:
    count: int = await pool.fetchval("SELECT count(*) FROM things")
    return count == n


async def test_a_started_relay_sends_a_burst_larger_than_its_batch_on_its_own_connection(
    pool: asyncpg.Pool, bus_dsn: str
) -> None:
    transport = InMemoryTransport()
    bus = Bus(transport, source="producer")
    received: list[Message] = []

    async def handler(message: Message) -> None:
        received.append(message)

    bus.subscribe("thing.*", handler, queue="listener", events=[ThingCreated])
    await bus.start()
    relay = OutboxRelay(pool, bus, dsn=bus_dsn, batch_size=40, poll_interval=60)
    await relay.start()
    try:
        await wait_for(lambda: _listening(relay), within=5)
        async with transaction(pool) as conn:
            envelopes = [
                await Outbox(bus.source).publish(conn, ThingCreated(name=f"b{i}"))
                for i in range(130)
            ]
        await wait_for(lambda: _count(received, 130), within=10)
        await wait_for(lambda: _no_pending(pool), within=5)
    finally:
        await relay.stop()
        await bus.stop()
    by_id = {m.envelope.id: m for m in received}
    assert [by_id[e.id].envelope for e in envelopes] == envelopes  # each as it was written
    assert [by_id[e.id].event for e in envelopes] == [
        ThingCreated(name=f"b{i}") for i in range(130)
    ]


async def _no_pending(pool: asyncpg.Pool) -> bool:
    return await _pending(pool) == 0

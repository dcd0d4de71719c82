"""``Outbox.publish_many`` and the pipelined relay, against a real PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from core.bus import Bus, InMemoryTransport, Message, Outbox, OutboxRelay
from core.bus.outbox import NOTIFY_CHANNEL
from core.db import transaction
from core.testing import wait_for
from tests.core.bus.test_outbox import FlakyTransport, ThingCreated

MARK = "aioshop_test_mark"


class Notifications:
    """What a LISTEN connection received on the outbox channel, up to a marker."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.outbox = 0
        self.marks = 0

    def on_outbox(self, *args: object) -> None:
        self.outbox += 1

    def on_mark(self, *args: object) -> None:
        self.marks += 1

    async def settled(self, pool: asyncpg.Pool) -> int:
        """How many outbox notifications came for the transactions committed so far: a marker
        notified after them arrives after all of theirs."""
        seen = self.marks
        await pool.execute(f"NOTIFY {MARK}")

        async def marked() -> bool:
            return self.marks > seen

        await wait_for(marked, within=5)
        return self.outbox


@pytest.fixture
async def notifications(bus_dsn: str) -> AsyncIterator[Notifications]:
    conn = await asyncpg.connect(bus_dsn)
    listening = Notifications(conn)
    await conn.add_listener(NOTIFY_CHANNEL, listening.on_outbox)
    await conn.add_listener(MARK, listening.on_mark)
    yield listening
    await conn.close()


async def _rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT id, routing_key, envelope::text AS envelope FROM outbox ORDER BY created_at, id"
    )


async def test_publish_many_writes_every_event_in_order_with_one_notification(
    pool: asyncpg.Pool, notifications: Notifications
) -> None:
    outbox = Outbox("producer")
    events = [ThingCreated(name=f"t{i}") for i in range(50)]
    async with transaction(pool) as conn:
        envelopes = await outbox.publish_many(conn, events)
    assert [e.data["name"] for e in envelopes] == [f"t{i}" for i in range(50)]
    assert len({e.id for e in envelopes}) == 50
    rows = await _rows(pool)
    # The relay's order (created_at, id) is the order given, whatever the random ids.
    assert [r["id"] for r in rows] == [e.id for e in envelopes]
    assert {r["routing_key"] for r in rows} == {"thing.created"}
    assert await notifications.settled(pool) == 1


async def test_publish_many_rolled_back_writes_and_notifies_nothing(
    pool: asyncpg.Pool, notifications: Notifications
) -> None:
    outbox = Outbox("producer")

    async def write_then_fail() -> None:
        async with transaction(pool) as conn:
            await outbox.publish_many(conn, [ThingCreated(name="a"), ThingCreated(name="b")])
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await write_then_fail()
    assert await _rows(pool) == []
    assert await notifications.settled(pool) == 0


async def test_publish_many_of_nothing_writes_nothing_and_needs_a_transaction(
    pool: asyncpg.Pool,
) -> None:
    outbox = Outbox("producer")
    async with transaction(pool) as conn:
        assert await outbox.publish_many(conn, []) == []
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            await outbox.publish_many(conn, [ThingCreated(name="x")])
    assert await _rows(pool) == []


async def _relay_burst(
    pool: asyncpg.Pool, bus_dsn: str, transport: InMemoryTransport, count: int
) -> tuple[list[Message], list[str]]:
    """Write ``count`` events in one transaction, let a started two-lane relay with batches
    of 7 send them all; what was delivered, and the names in the order written."""
    bus = Bus(transport, source="producer")
    received: list[Message] = []

    async def handler(message: Message) -> None:
        received.append(message)

    bus.subscribe("thing.*", handler, queue="listener", events=[ThingCreated])
    await bus.start()
    relay = OutboxRelay(
        pool,
        bus,
        dsn=bus_dsn,
        batch_size=7,
        poll_interval=60,
        lanes=2,
        retry_base=0.01,
        retry_cap=0.05,
    )
    await relay.start()
    names = [f"p{i}" for i in range(count)]
    try:
        async with transaction(pool) as conn:
            await Outbox(bus.source).publish_many(conn, [ThingCreated(name=n) for n in names])

        async def all_sent() -> bool:
            pending = await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            return pending == 0 and len({m.envelope.id for m in received}) == count

        await wait_for(all_sent, within=10)
    finally:
        await relay.stop()
        await bus.stop()
    return received, names


async def test_the_pipelined_relay_sends_a_burst_once_each_in_order(
    pool: asyncpg.Pool, bus_dsn: str
) -> None:
    received, names = await _relay_burst(pool, bus_dsn, InMemoryTransport(), 95)
    got = [m.event.name for m in received if isinstance(m.event, ThingCreated)]
    assert got == names  # once each, in creation order across both lanes


async def test_the_pipelined_relay_marks_a_row_only_after_its_confirm(
    pool: asyncpg.Pool, bus_dsn: str
) -> None:
    transport = FlakyTransport(failures=3)
    received, names = await _relay_burst(pool, bus_dsn, transport, 30)
    # Three confirms were lost after delivery: those rows stayed unsent and went again.
    assert len(received) == 33
    assert {m.event.name for m in received if isinstance(m.event, ThingCreated)} == set(names)
    attempts = await pool.fetchval("SELECT sum(attempts) FROM outbox")
    assert attempts == 3
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0

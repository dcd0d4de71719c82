"""Typed consumers with the inbox built in, tested with the core.testing bus kit: once per
event id, effects and outbox writes in one transaction, actions after the commit only, an
unknown version parked."""

from __future__ import annotations

import asyncpg
import pytest

from core.bus import Delivery, Envelope, Event, Inbox, RetryPolicy
from core.testing import BusKit


class Made(Event):
    """A thing to make (consumed)."""

    event_type = "consume.made"

    name: str


class Announced(Event):
    """What the consumer publishes, through the outbox, about a made thing."""

    event_type = "consume.announced"

    name: str


async def _things(pool: asyncpg.Pool) -> list[str]:
    return [r["name"] for r in await pool.fetch("SELECT name FROM things ORDER BY name")]


async def test_a_consumer_runs_once_per_event_and_acts_after_its_commit(
    bus_kit: BusKit, pool: asyncpg.Pool
) -> None:
    bus = bus_kit.bus("maker")
    committed: list[tuple[str, bool]] = []

    async def on_made(event: Made, ctx: Delivery) -> None:
        await ctx.conn.execute("INSERT INTO things (name) VALUES ($1)", event.name)
        written = await ctx.publish(Announced(name=event.name))
        assert written.causation_id == str(ctx.envelope.id)

        async def after() -> None:
            # Another connection sees the row: the transaction has committed.
            visible = await pool.fetchval("SELECT count(*) FROM things WHERE name = $1", event.name)
            committed.append((event.name, visible == 1))

        ctx.after_commit(after)

    inbox = Inbox(pool, consumer="maker")
    bus.consume(on_made, queue=bus_kit.name("maker"), inbox=inbox, prefetch=1)
    await bus.start()

    envelope = bus.envelope(Made(name="kettle"))
    await bus_kit.publish_envelope(envelope)
    await bus_kit.publish_envelope(envelope)  # a redelivery: dropped by the inbox

    async def made() -> bool:
        return await _things(pool) == ["kettle", "mug"] and len(committed) == 2

    await bus_kit.publish_and_wait(Made(name="mug"), until=made)
    # One queue, prefetch 1: once "mug" is done, both copies of "kettle" were handled.
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", envelope.id) == 1
    rows = await pool.fetch("SELECT routing_key, envelope FROM outbox ORDER BY created_at")
    assert [(r["routing_key"], r["envelope"]["data"]["name"]) for r in rows] == [
        ("consume.announced", "kettle"),
        ("consume.announced", "mug"),
    ]
    assert sorted(committed) == [("kettle", True), ("mug", True)]


async def test_a_failed_attempt_rolls_back_its_writes_and_its_after_commit_actions(
    memory_bus_kit: BusKit, pool: asyncpg.Pool
) -> None:
    bus = memory_bus_kit.bus("maker")
    after: list[int] = []

    async def on_made(event: Made, ctx: Delivery) -> None:
        await ctx.publish(Announced(name=f"{event.name}-{ctx.attempt}"))
        ctx.after_commit(lambda: after.append(ctx.attempt))
        if ctx.attempt == 1:
            raise RuntimeError("the first attempt fails after writing")

    bus.consume(on_made, inbox=Inbox(pool, consumer="maker"), retry=RetryPolicy((0.05,)))
    await bus.start()

    async def done() -> bool:
        return after == [2]

    await memory_bus_kit.publish_and_wait(Made(name="x"), until=done)
    rows = await pool.fetch("SELECT envelope FROM outbox")
    assert [r["envelope"]["data"]["name"] for r in rows] == ["x-2"]


async def test_an_unknown_version_is_parked_and_an_invalid_one_too(bus_kit: BusKit) -> None:
    bus = bus_kit.bus("maker")
    queue = bus_kit.name("maker")
    handled: list[str] = []
    # What ctx.conn did in the handler, asserted in the test: a failed check (pytest.raises's
    # Failed included) raised inside the handler is the consumer's, never the test's.
    conn_outcomes: list[object] = []

    async def on_made(event: Made, ctx: Delivery) -> None:
        handled.append(event.name)
        try:
            conn_outcomes.append(ctx.conn)  # no inbox, no transaction: raises
        except RuntimeError as exc:
            conn_outcomes.append(exc)

    bus.consume(on_made, queue=queue)
    await bus.start()
    v2 = Envelope(type="consume.made", version=2, source="t", data={"name": "new"})
    invalid = Envelope(type="consume.made", source="t", data={"name": ["not", "a", "str"]})
    await bus_kit.publish_envelope(v2)
    await bus_kit.publish_envelope(invalid)

    async def settled() -> list[str | None]:
        found = [p.message_id for p in await bus_kit.parked(queue)]
        return found if len(found) == 2 and handled == ["ok"] else []

    parked = await bus_kit.publish_and_wait(Made(name="ok"), until=settled, within=10)
    assert sorted(parked, key=str) == sorted([str(v2.id), str(invalid.id)])
    assert [type(outcome) for outcome in conn_outcomes] == [RuntimeError], conn_outcomes


def test_two_handlers_on_one_inbox_key_are_refused(memory_bus_kit: BusKit) -> None:
    bus = memory_bus_kit.bus("maker")
    inbox = Inbox(pool=None, consumer="maker")  # type: ignore[arg-type]

    async def first(event: Made, ctx: Delivery) -> None: ...

    async def second(event: Made, ctx: Delivery) -> None: ...

    bus.consume(first, inbox=inbox)
    with pytest.raises(ValueError, match=r"maker:consume\.made"):
        bus.consume(second, inbox=inbox)
    bus.consume(second, inbox=inbox, name="second")

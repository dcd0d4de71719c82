"""The trace context survives the outbox: a row written in one trace is published by the relay,
later and from another task, in that trace, and its consumer continues it (real PostgreSQL,
in-memory transport)."""

from __future__ import annotations

import asyncpg
from opentelemetry.trace import SpanKind

from core import tracing
from core.bus import Bus, Delivery, Event, Inbox, InMemoryTransport, Outbox, OutboxRelay
from core.db import transaction
from core.testing import SpanRecorder, wait_for


class Traced(Event):
    """A test event."""

    event_type = "traced.thing"

    name: str


async def test_the_relay_publishes_a_row_in_the_trace_that_wrote_it(
    pool: asyncpg.Pool, span_recorder: SpanRecorder
) -> None:
    transport = InMemoryTransport()
    producer, consumer = Bus(transport, source="producer"), Bus(transport, source="consumer")
    handled: list[str] = []
    seen_in: list[tuple[str, str] | None] = []

    async def on_traced(event: Traced, ctx: Delivery) -> None:
        handled.append(event.name)
        seen_in.append(tracing.current_ids())
        await ctx.conn.execute("INSERT INTO things (name) VALUES ($1)", event.name)

    consumer.consume(on_traced, queue="traced", inbox=Inbox(pool, consumer="traced"))
    await consumer.start()
    await producer.start()
    tracer = tracing.tracer()
    assert tracer is not None
    try:
        with tracer.start_as_current_span("request") as request_span:
            async with transaction(pool) as conn:
                await Outbox("producer").publish_many(
                    conn, [Traced(name="one"), Traced(name="two")]
                )
        async with transaction(pool) as conn:  # outside any trace: nothing stored
            await Outbox("producer").publish(conn, Traced(name="three"))
        stored = await pool.fetch("SELECT headers FROM outbox ORDER BY created_at")
        assert [row["headers"] is not None for row in stored] == [True, True, False]
        assert span_recorder.of_kind(SpanKind.PRODUCER) == []  # nothing sent yet

        # Later, from a task of its own, outside the request's context.
        assert await OutboxRelay(pool, producer, dsn="unused").relay_once() == 3

        async def all_handled() -> bool:
            return sorted(handled) == ["one", "three", "two"]

        await wait_for(all_handled)
    finally:
        await producer.stop()
        await consumer.stop()

    request = request_span.get_span_context()
    publishes = span_recorder.of_kind(SpanKind.PRODUCER)
    processes = span_recorder.of_kind(SpanKind.CONSUMER)
    assert len(publishes) == 2  # the row written outside a trace starts none
    assert len(processes) == 2
    for span in (*publishes, *processes):
        assert span.context is not None
        assert span.context.trace_id == request.trace_id
    assert {s.parent.span_id for s in publishes if s.parent} == {request.span_id}
    publish_ids = {s.context.span_id for s in publishes if s.context}
    assert {s.parent.span_id for s in processes if s.parent} == publish_ids
    traced_logs = [ids for ids in seen_in if ids is not None]
    assert len(traced_logs) == 2  # the handlers ran inside the consumer spans
    assert all(ids[0] == f"{request.trace_id:032x}" for ids in traced_logs)


async def test_unreadable_stored_headers_are_ignored(
    pool: asyncpg.Pool, span_recorder: SpanRecorder
) -> None:
    transport = InMemoryTransport()
    bus = Bus(transport, source="producer")
    await bus.start()
    try:
        for headers in ('{"traceparent": "nonsense"}', "[1, 2]", '{"traceparent": 7}'):
            async with transaction(pool) as conn:
                envelope = await Outbox("producer").publish(conn, Traced(name=headers))
                await conn.execute(
                    "UPDATE outbox SET headers = $1::text::jsonb WHERE id = $2",
                    headers,
                    envelope.id,
                )
        assert await OutboxRelay(pool, bus, dsn="unused").relay_once() == 3
    finally:
        await bus.stop()
    assert span_recorder.of_kind(SpanKind.PRODUCER) == []

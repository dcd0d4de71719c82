"""Transactional outbox: events are written with the change that caused them, then relayed.

``Outbox.publish(conn, event)`` inserts the envelope into the service's ``outbox`` table inside
the caller's transaction and notifies the relay (``Outbox.publish_many(conn, events)``: all of a
transaction's events in one statement); nothing leaves the service unless that
transaction commits. ``core.bus.relay.OutboxRelay`` sends the committed rows. When tracing is
on (``core.tracing``), the trace context of the caller is stored with the rows (the ``headers``
column) and the relay publishes them in that trace, however much later.

This module imports nothing of ``core.db`` (which imports ``core.keys``, which names ``Outbox``):
``Connection`` is spelled here as ``core.db`` spells it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TypeAlias

import asyncpg
import asyncpg.pool
import orjson

from core import tracing
from core.bus.events import Envelope, Event

__all__ = ["NOTIFY_CHANNEL", "Connection", "Outbox"]

NOTIFY_CHANNEL = "aioshop_outbox"
# One round trip for all. NOTIFY inside a transaction is delivered at commit (once per
# transaction, however many rows), and not at all on rollback. The envelopes go as text (orjson
# over the model's fields) and are cast by the server: no intermediate dicts.
_INSERT = """
    WITH recorded AS (
        INSERT INTO outbox (id, routing_key, envelope, created_at)
        SELECT id, routing_key, envelope::jsonb, created_at
          FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
               AS r(id, routing_key, envelope, created_at)
        RETURNING 1
    )
    SELECT pg_notify($5, '') FROM (SELECT 1 FROM recorded LIMIT 1) AS once
"""
# The same with the trace context of the transaction's caller, in every row.
_INSERT_TRACED = """
    WITH recorded AS (
        INSERT INTO outbox (id, routing_key, envelope, created_at, headers)
        SELECT id, routing_key, envelope::jsonb, created_at, $6::text::jsonb
          FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
               AS r(id, routing_key, envelope, created_at)
        RETURNING 1
    )
    SELECT pg_notify($5, '') FROM (SELECT 1 FROM recorded LIMIT 1) AS once
"""
_TICK = timedelta(microseconds=1)

Connection: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
)


class Outbox:
    """Writes events of service ``source`` into the outbox table within the caller's transaction.

    Needs no running bus: a command-line tool can record events that the service relays later.
    """

    def __init__(self, source: str) -> None:
        self.source = source

    async def publish(self, conn: Connection, event: Event) -> Envelope:
        """Record ``event`` for publishing once ``conn``'s transaction commits."""
        (envelope,) = await self.publish_many(conn, [event])
        return envelope

    async def publish_many(self, conn: Connection, events: Sequence[Event]) -> list[Envelope]:
        """Record ``events``, in this order, for publishing once ``conn``'s transaction commits:
        one statement for all of them, and one notification of the relay.

        The relay sends rows by ``(created_at, id)``: the rows get strictly increasing
        ``created_at`` (each envelope's ``occurred_at``, nudged a microsecond past the previous
        row's when the clock did not move), so they leave in the order given.
        """
        if not conn.is_in_transaction():
            raise RuntimeError("Outbox.publish needs a connection inside a transaction")
        if not events:
            return []
        envelopes = [Envelope.wrap(event, source=self.source) for event in events]
        created: list[datetime] = []
        for envelope in envelopes:
            at = envelope.occurred_at
            if created and at <= created[-1]:
                at = created[-1] + _TICK
            created.append(at)
        columns = (
            [envelope.id for envelope in envelopes],
            [envelope.type for envelope in envelopes],
            [envelope.to_bytes().decode() for envelope in envelopes],
            created,
            NOTIFY_CHANNEL,
        )
        trace = tracing.trace_headers()
        if trace is None:
            await conn.execute(_INSERT, *columns)
        else:
            await conn.execute(_INSERT_TRACED, *columns, orjson.dumps(trace).decode())
        return envelopes

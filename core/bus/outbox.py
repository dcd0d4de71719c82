"""Transactional outbox: events are written with the change that caused them, then relayed.

``Outbox.publish(conn, event)`` inserts the envelope into the service's ``outbox`` table inside
the caller's transaction and notifies the relay; nothing leaves the service unless that
transaction commits. ``core.bus.relay.OutboxRelay`` sends the committed rows.

This module imports nothing of ``core.db`` (which imports ``core.keys``, which names ``Outbox``):
``Connection`` is spelled here as ``core.db`` spells it.
"""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
import asyncpg.pool

from core.bus.events import Envelope, Event

__all__ = ["NOTIFY_CHANNEL", "Connection", "Outbox"]

NOTIFY_CHANNEL = "aioshop_outbox"

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
        if not conn.is_in_transaction():
            raise RuntimeError("Outbox.publish needs a connection inside a transaction")
        envelope = Envelope.wrap(event, source=self.source)
        # One round trip for both. NOTIFY inside a transaction is delivered at commit (once per
        # transaction, however many rows), and not at all on rollback.
        await conn.execute(
            """
            WITH recorded AS (
                INSERT INTO outbox (id, routing_key, envelope, created_at)
                VALUES ($1, $2, $3, $4) RETURNING id
            )
            SELECT pg_notify($5, '') FROM recorded
            """,
            envelope.id,
            envelope.type,
            envelope.model_dump(mode="json"),
            envelope.occurred_at,
            NOTIFY_CHANNEL,
        )
        return envelope

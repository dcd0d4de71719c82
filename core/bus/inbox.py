"""Inbox: each consumer processes an event id at most once.

The dedup row is written in the same transaction as the handler's effects, so at-least-once
delivery becomes effectively-once processing: a redelivered or re-sent event finds its id already
recorded and is acknowledged without running the handler again. Pass an ``Inbox`` to
``Bus.consume``; the bus opens the transaction, claims the event id and runs the handler in it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg

from core.bus.events import Envelope
from core.bus.outbox import Connection

__all__ = ["Inbox"]

log = logging.getLogger("core.bus.inbox")


class Inbox:
    """The ``inbox`` table of one consumer (a service) in its own database.

    Each handler gets an inbox key ``"<consumer>:<name>"``, where ``name`` defaults to the
    event type: ``Bus.consume`` refuses two handlers with one key, which would each see the
    other's events as already done.
    """

    def __init__(self, pool: asyncpg.Pool, *, consumer: str) -> None:
        self.pool = pool
        self.consumer = consumer
        self._keys: set[str] = set()

    def key(self, name: str) -> str:
        """Reserve the inbox key of handler ``name``; ``ValueError`` if it is taken."""
        key = f"{self.consumer}:{name}"
        if key in self._keys:
            raise ValueError(f"an inbox handler named {key!r} exists already; pass name=")
        self._keys.add(key)
        return key

    @contextlib.asynccontextmanager
    async def once(self, key: str, envelope: Envelope) -> AsyncIterator[Connection | None]:
        """A transaction that has claimed ``envelope`` for ``key``: yields its connection, or
        ``None`` (and does nothing) when the event was processed already.

        It commits when the block ends and rolls back, releasing the claim, when it raises.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            first = await conn.fetchval(
                """
                INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3)
                ON CONFLICT DO NOTHING RETURNING true
                """,
                key,
                envelope.id,
                envelope.type,
            )
            if not first:
                log.info("dropping duplicate %s for %s", envelope.id, key)
                yield None
                return
            yield conn

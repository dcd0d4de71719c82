"""Inbox: each consumer processes an event id at most once.

The dedup row is written in the same transaction as the handler's effects, so at-least-once
delivery becomes effectively-once processing: a redelivered or re-sent event finds its id already
recorded and is acknowledged without running the handler again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import asyncpg

from core.bus.bus import Handler, Message
from core.db import Connection, transaction

__all__ = ["Inbox", "InboxHandler"]

log = logging.getLogger("core.bus.inbox")

InboxHandler = Callable[[Message, Connection], Awaitable[None]]


class Inbox:
    """Wraps handlers so that each (consumer, event id) runs once, transactionally."""

    def __init__(self, pool: asyncpg.Pool, *, consumer: str) -> None:
        self.pool = pool
        self.consumer = consumer
        self._names: set[str] = set()

    def handler(self, handler: InboxHandler, *, name: str | None = None) -> Handler:
        """A bus handler running ``handler(message, conn)`` once per event id.

        ``conn`` is inside the transaction that records the event id: write the handler's
        effects (and outbox events) through it.
        """
        consumer = f"{self.consumer}:{name or f'{handler.__module__}.{handler.__qualname__}'}"
        if consumer in self._names:
            # Two handlers sharing an id would each see the other's events as already done.
            raise ValueError(f"an inbox handler named {consumer!r} exists already; pass name=")
        self._names.add(consumer)

        async def once(message: Message) -> None:
            async with transaction(self.pool) as conn:
                first = await conn.fetchval(
                    """
                    INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3)
                    ON CONFLICT DO NOTHING RETURNING true
                    """,
                    consumer,
                    message.envelope.id,
                    message.envelope.type,
                )
                if not first:
                    log.info("dropping duplicate %s for %s", message.envelope.id, consumer)
                    return
                await handler(message, conn)

        once.__name__ = handler.__name__
        return once

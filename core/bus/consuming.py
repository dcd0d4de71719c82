"""Typed consumption: a handler annotated with its event class, and what it gets with it.

::

    async def on_order_placed(event: OrderPlaced, ctx: Delivery) -> None:
        await reserve(ctx.conn, event.order_id)
        ctx.after_commit(lambda: cache.invalidate(event.order_id))

    bus.consume(on_order_placed, queue="products", inbox=Inbox(pool, consumer="products"))

The event class is read from the first parameter's annotation. With an ``Inbox`` the handler
runs once per event id in a transaction of the consumer's database that also records the id;
``ctx.conn`` is that transaction's connection, ``ctx.publish`` writes to the outbox in it, and
``ctx.after_commit`` callbacks run once it committed (never when it rolled back), at most once
(see ``Delivery.after_commit``).
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from core.bus.events import Envelope, Event
from core.bus.inbox import Inbox
from core.bus.outbox import Connection, Outbox

__all__ = [
    "AfterCommit",
    "BroadcastHandler",
    "Delivery",
    "EventHandler",
    "event_class_of",
    "run_once",
]

log = logging.getLogger("core.bus")

E = TypeVar("E", bound=Event)

AfterCommit = Callable[[], Awaitable[object] | object]


class Delivery:
    """The context of one typed delivery: the envelope, the attempt, the transaction."""

    def __init__(
        self,
        envelope: Envelope,
        *,
        attempt: int,
        queue: str,
        outbox: Outbox,
        conn: Connection | None = None,
    ) -> None:
        self.envelope = envelope
        self.attempt = attempt
        self.queue = queue
        self.outbox = outbox
        self._conn = conn
        self._after_commit: list[AfterCommit] = []

    @property
    def conn(self) -> Connection:
        """The connection of the inbox's transaction (only a consumer with an inbox has one)."""
        if self._conn is None:
            raise RuntimeError("this handler runs without an inbox: it has no transaction")
        return self._conn

    async def publish(self, event: Event) -> Envelope:
        """Write ``event`` to the outbox in this delivery's transaction (sent once it commits)."""
        return await self.outbox.publish(self.conn, event)

    async def publish_many(self, events: Sequence[Event]) -> list[Envelope]:
        """Write ``events``, in order, to the outbox in this delivery's transaction, in one
        statement (``Outbox.publish_many``)."""
        return await self.outbox.publish_many(self.conn, events)

    def after_commit(self, callback: AfterCommit) -> None:
        """Run ``callback()`` (awaited if it returns an awaitable) once the transaction has
        committed; not at all if the handler fails. Without an inbox: once the handler
        returned. A failing callback is logged: the event is processed and will not come back.

        With an inbox the callbacks run at most once, not at least once: if the process dies
        between the commit and the acknowledgement, the broker delivers the event again, the
        inbox sees a duplicate and skips the handler, and its after-commit callbacks do not run
        again (those that had not run yet are lost). Only register actions whose loss is
        bounded: a cache entry that expires anyway, a wake-up of the saga runner, which also
        polls. Work that must happen belongs in the transaction (``ctx.conn``,
        ``ctx.publish``).
        """
        self._after_commit.append(callback)

    async def committed(self) -> None:
        """Run the ``after_commit`` callbacks, in order (the bus calls this)."""
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception(
                    "after-commit action of %s %s failed", self.envelope.type, self.envelope.id
                )


EventHandler = Callable[[E, Delivery], Awaitable[None]]
BroadcastHandler = Callable[[E, Envelope], Awaitable[None]]


def event_class_of(handler: Callable[[E, Any], Awaitable[None]]) -> type[E]:
    """The event class a handler's first parameter is annotated with (``TypeError`` if none)."""
    target = handler if inspect.isroutine(handler) else type(handler).__call__
    try:
        hints = typing.get_type_hints(target)
    except Exception as exc:  # an annotation that does not resolve in the handler's module
        raise TypeError(f"cannot read the annotations of {handler!r}: {exc}") from exc
    positional = [
        p
        for p in inspect.signature(handler).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    annotation = hints.get(positional[0].name) if positional else None
    if not (
        isinstance(annotation, type)
        and issubclass(annotation, Event)
        and hasattr(annotation, "event_type")
    ):
        raise TypeError(
            f"{handler!r}: annotate its first parameter with the event class it consumes"
        )
    return typing.cast(type[E], annotation)


async def run_once(
    handler: EventHandler[E],
    event: E,
    delivery: Delivery,
    *,
    inbox: Inbox | None,
    key: str,
) -> None:
    """Run ``handler`` for ``event``: in a claimed inbox transaction when there is an inbox,
    then the delivery's ``after_commit`` callbacks."""
    if inbox is None:
        await handler(event, delivery)
    else:
        async with inbox.once(key, delivery.envelope) as conn:
            if conn is None:
                return
            delivery._conn = conn
            try:
                await handler(event, delivery)
            finally:
                delivery._conn = None
    if delivery._after_commit:
        await delivery.committed()

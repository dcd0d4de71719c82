"""Bus handlers of the products service: the order saga's stock steps (``order.*`` events).

Each handler runs through the ``Inbox`` (an event id is processed once, in the transaction that
records it) and calls the service inside that transaction; the cache entries the change made
stale are invalidated after the transaction commits, never before.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from core.bus import Bus, Event, Handler, Inbox, Message, PermanentFailure
from core.db import Connection
from core.keys import DB_POOL
from services.products.events import OrderCancelled, OrderPlaced, OrderRejected, OrderShipped
from services.products.keys import PRODUCTS_SERVICE
from services.products.service import ProductsService, Stale

__all__ = ["subscribe"]

Work = Callable[[ProductsService, Message, Connection], Awaitable[Stale]]

E = TypeVar("E", bound=Event)

_stale: contextvars.ContextVar[list[Stale]] = contextvars.ContextVar("products_stale")


def _event(message: Message, cls: type[E]) -> E:
    if not isinstance(message.event, cls):  # a version this service does not know
        raise PermanentFailure(f"{message.envelope.type} v{message.envelope.version} is unknown")
    return message.event


async def _placed(service: ProductsService, message: Message, conn: Connection) -> Stale:
    event = _event(message, OrderPlaced)
    lines = [(line.product_id, line.quantity) for line in event.items]
    _, stale = await service.reserve_in(conn, event.order_id, lines)
    return stale


async def _cancelled(service: ProductsService, message: Message, conn: Connection) -> Stale:
    event = _event(message, OrderCancelled)
    _, stale = await service.release_in(conn, event.order_id)
    return stale


async def _rejected(service: ProductsService, message: Message, conn: Connection) -> Stale:
    event = _event(message, OrderRejected)
    _, stale = await service.release_in(conn, event.order_id)
    return stale


async def _shipped(service: ProductsService, message: Message, conn: Connection) -> Stale:
    event = _event(message, OrderShipped)
    _, stale = await service.commit_in(conn, event.order_id)
    return stale


def _handler(app: web.Application, inbox: Inbox, name: str, work: Work) -> Handler:
    """``work`` once per event id in the inbox's transaction, then the invalidation."""

    async def in_transaction(message: Message, conn: Connection) -> None:
        _stale.get().append(await work(app[PRODUCTS_SERVICE], message, conn))

    once = inbox.handler(in_transaction, name=name)

    async def handle(message: Message) -> None:
        collected: list[Stale] = []
        token = _stale.set(collected)
        try:
            await once(message)  # returns once the transaction has committed
        finally:
            _stale.reset(token)
        for stale in collected:
            await app[PRODUCTS_SERVICE].invalidate(stale)

    handle.__name__ = f"on_{name.replace('.', '_')}"
    return handle


def subscribe(app: web.Application, bus: Bus, *, queue: str) -> None:
    """Subscribe the service's handlers on ``queue`` (needs ``app[DB_POOL]``)."""
    inbox = Inbox(app[DB_POOL], consumer="products")
    for event, work in (
        (OrderPlaced, _placed),
        (OrderCancelled, _cancelled),
        (OrderRejected, _rejected),
        (OrderShipped, _shipped),
    ):
        bus.subscribe(
            event.event_type,
            _handler(app, inbox, event.event_type, work),
            queue=queue,
            events=[event],
        )

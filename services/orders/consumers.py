"""Bus handlers of the orders service: the products service's answers to the saga.

Each runs through the ``Inbox`` (an event id is processed once, in the transaction that records
it) and applies its decision inside that transaction; metrics are observed and the saga runner
woken once it has committed.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from core.bus import Bus, Event, Handler, Inbox, Message, PermanentFailure
from core.db import Connection
from core.keys import DB_POOL
from services.orders.events import InventoryReleased, InventoryReservationFailed, InventoryReserved
from services.orders.keys import ORDERS_SERVICE, SAGA_RUNNER
from services.orders.saga import on_released, on_reservation_failed, on_reserved
from services.orders.service import Decision, OrdersService, Transition

__all__ = ["subscribe"]

E = TypeVar("E", bound=Event)

_done: contextvars.ContextVar[list[Transition]] = contextvars.ContextVar("orders_done")

Decide = Callable[[OrdersService, Message], tuple[Event, Decision]]


def _event(message: Message, cls: type[E]) -> E:
    if not isinstance(message.event, cls):  # a version this service does not know
        raise PermanentFailure(f"{message.envelope.type} v{message.envelope.version} is unknown")
    return message.event


def _reserved(service: OrdersService, message: Message) -> tuple[Event, Decision]:
    event = _event(message, InventoryReserved)
    return event, on_reserved(event, service.settings.payment_timeout)


def _failed(service: OrdersService, message: Message) -> tuple[Event, Decision]:
    event = _event(message, InventoryReservationFailed)
    return event, on_reservation_failed(event)


def _released(service: OrdersService, message: Message) -> tuple[Event, Decision]:
    event = _event(message, InventoryReleased)
    return event, on_released([item.model_dump(mode="json") for item in event.items])


def _handler(app: web.Application, inbox: Inbox, name: str, decide: Decide) -> Handler:
    async def in_transaction(message: Message, conn: Connection) -> None:
        service = app[ORDERS_SERVICE]
        event, decision = decide(service, message)
        order_id = getattr(event, "order_id")  # noqa: B009 - every inventory answer has one
        transition = await service.transition_in(conn, order_id, decision)
        if transition is not None:
            _done.get().append(transition)

    once = inbox.handler(in_transaction, name=name)

    async def handle(message: Message) -> None:
        collected: list[Transition] = []
        token = _done.set(collected)
        try:
            await once(message)  # returns once the transaction has committed
        finally:
            _done.reset(token)
        for transition in collected:
            await app[ORDERS_SERVICE].committed(transition)
        if any(t.change is not None and t.change.step for t in collected):
            app[SAGA_RUNNER].wake()

    handle.__name__ = f"on_{name.replace('.', '_')}"
    return handle


def subscribe(app: web.Application, bus: Bus, *, queue: str) -> None:
    """Subscribe the service's handlers on ``queue`` (needs ``app[DB_POOL]``)."""
    inbox = Inbox(app[DB_POOL], consumer="orders")
    handlers: tuple[tuple[type[Event], Decide], ...] = (
        (InventoryReserved, _reserved),
        (InventoryReservationFailed, _failed),
        (InventoryReleased, _released),
    )
    for event, decide in handlers:
        bus.subscribe(
            event.event_type,
            _handler(app, inbox, event.event_type, decide),
            queue=queue,
            events=[event],
        )

"""Bus handlers of the orders service: the products service's answers to the saga.

Each is a typed ``core.bus`` consumer with the service's inbox: it runs once per event id and
applies its decision inside the transaction that records the id; once that transaction has
committed, the saga runner starts the step it leased (the payment, right after the reservation)
or looks for the work that became due, and metrics are observed.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from core.bus import Bus, Delivery, Inbox
from core.keys import DB_POOL
from services.orders.keys import ORDERS_SERVICE, SAGA_RUNNER
from services.orders.saga import on_released, on_reservation_failed, on_reserved
from services.orders.service import Decision
from services.products.events import (
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
)

__all__ = ["subscribe"]


def subscribe(app: web.Application, bus: Bus, *, queue: str) -> None:
    """Consume the inventory answers on ``queue`` (needs ``app[DB_POOL]``; the handlers find
    ``app[ORDERS_SERVICE]`` and ``app[SAGA_RUNNER]`` when they run)."""

    async def apply(ctx: Delivery, order_id: uuid.UUID, decision: Decision) -> None:
        service = app[ORDERS_SERVICE]
        transition = await service.transition_in(ctx.conn, order_id, decision)
        if transition is None:
            return

        # Two callbacks, the saga runner first: a failing cache invalidation or metric must not
        # keep the payment step from starting.
        if transition.change is not None and transition.change.step:
            ctx.after_commit(lambda: app[SAGA_RUNNER].committed(transition))
        ctx.after_commit(lambda: service.committed(transition))

    async def on_inventory_reserved(event: InventoryReserved, ctx: Delivery) -> None:
        settings = app[ORDERS_SERVICE].settings
        decision = on_reserved(event, settings.payment_timeout, lease=settings.saga_lease)
        await apply(ctx, event.order_id, decision)

    async def on_inventory_reservation_failed(
        event: InventoryReservationFailed, ctx: Delivery
    ) -> None:
        await apply(ctx, event.order_id, on_reservation_failed(event))

    async def on_inventory_released(event: InventoryReleased, ctx: Delivery) -> None:
        items = [item.model_dump(mode="json") for item in event.items]
        await apply(ctx, event.order_id, on_released(items))

    inbox = Inbox(app[DB_POOL], consumer="orders")
    for handler in (
        on_inventory_reserved,
        on_inventory_reservation_failed,
        on_inventory_released,
    ):
        bus.consume(handler, queue=queue, inbox=inbox)

"""Bus handlers of the products service: the order saga's stock steps (``order.*`` events).

Each handler is a typed ``core.bus`` consumer with the service's inbox: it runs once per event
id, calls the service inside the transaction that records the id, and the cache entries the
change made stale are invalidated once that transaction has committed, never before.
"""

from __future__ import annotations

from aiohttp import web

from core.bus import Bus, Delivery, Inbox
from core.keys import DB_POOL
from services.orders.events import OrderCancelled, OrderPlaced, OrderRejected, OrderShipped
from services.products.keys import PRODUCTS_SERVICE
from services.products.service import Stale

__all__ = ["subscribe"]


def subscribe(app: web.Application, bus: Bus, *, queue: str) -> None:
    """Consume the order events on ``queue`` (needs ``app[DB_POOL]``; the handlers find
    ``app[PRODUCTS_SERVICE]`` when they run)."""

    def invalidate_after_commit(ctx: Delivery, stale: Stale) -> None:
        ctx.after_commit(lambda: app[PRODUCTS_SERVICE].invalidate(stale))

    async def on_order_placed(event: OrderPlaced, ctx: Delivery) -> None:
        lines = [(line.product_id, line.quantity) for line in event.items]
        _, stale = await app[PRODUCTS_SERVICE].reserve_in(ctx.conn, event.order_id, lines)
        invalidate_after_commit(ctx, stale)

    async def on_order_cancelled(event: OrderCancelled, ctx: Delivery) -> None:
        _, stale = await app[PRODUCTS_SERVICE].release_in(ctx.conn, event.order_id)
        invalidate_after_commit(ctx, stale)

    async def on_order_rejected(event: OrderRejected, ctx: Delivery) -> None:
        _, stale = await app[PRODUCTS_SERVICE].release_in(ctx.conn, event.order_id)
        invalidate_after_commit(ctx, stale)

    async def on_order_shipped(event: OrderShipped, ctx: Delivery) -> None:
        _, stale = await app[PRODUCTS_SERVICE].commit_in(ctx.conn, event.order_id)
        invalidate_after_commit(ctx, stale)

    inbox = Inbox(app[DB_POOL], consumer="products")
    for handler in (on_order_placed, on_order_cancelled, on_order_rejected, on_order_shipped):
        bus.consume(handler, queue=queue, inbox=inbox)

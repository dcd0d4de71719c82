"""HTTP handlers of the orders service: parse, authorize, call the service, and map the domain
objects it returns (order views, stored events) to the response bodies of ``schemas``."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from aiohttp import web

from core import Body, Header, Path, Principal, Query, Router
from core.pagination import Cursor, Limit
from core.schemas import Page
from services.orders.aggregate import StoredEvent
from services.orders.keys import ORDERS_SERVICE
from services.orders.projection import OrderView
from services.orders.schemas import LineOut, OrderEventOut, OrderIn, OrderOut

__all__ = ["router"]

router = Router(prefix="/api/v1", tags=["orders"])

OrderId = Annotated[UUID, Path()]

_HIDDEN = {404: "No such order, or someone else's"}


def order_out(view: OrderView) -> OrderOut:
    """The response body of an order."""
    return OrderOut(
        id=view.id,
        user_id=view.user_id,
        status=view.status,
        items=[
            LineOut(
                product_id=line.product_id,
                quantity=line.quantity,
                unit_price_cents=line.unit_price_cents,
            )
            for line in view.items
        ],
        total_cents=view.total_cents,
        currency=view.currency,
        shipping_address=view.shipping_address,
        reason=view.reason,
        created_at=view.created_at,
        updated_at=view.updated_at,
    )


def event_out(event: StoredEvent) -> OrderEventOut:
    """The response body of one event of an order's history."""
    return OrderEventOut(
        seq=event.seq, type=event.type, data=event.data, occurred_at=event.occurred_at
    )


@router.post(
    "/orders",
    status=202,
    response=OrderOut,
    auth=True,
    responses={
        422: "Invalid lines, or unknown products",
        503: "The catalog is unavailable",
        504: "The catalog did not answer in time",
    },
    idempotent=True,
)
async def place_order(
    request: web.Request,
    principal: Principal,
    body: Annotated[OrderIn, Body()],
    idempotency_key: Annotated[
        str | None, Header(description="Places the order once, however often it is sent")
    ] = None,
) -> OrderOut:
    """Place an order: it is ``pending`` until stock is reserved and the payment authorized.

    Prices come from the catalog. Poll ``GET /orders/{id}`` for the outcome (``confirmed`` or
    ``rejected`` with a ``reason``).
    """
    view = await request.app[ORDERS_SERVICE].place(
        UUID(principal.user_id), body, idempotency_key=idempotency_key
    )
    return order_out(view)


@router.get("/orders", response=Page[OrderOut], auth=True)
async def list_orders(
    request: web.Request,
    principal: Principal,
    limit: Limit = 20,
    cursor: Cursor = None,
    user_id: Annotated[
        UUID | None, Query(description="With `orders:read_all`: one user's orders")
    ] = None,
) -> Page[OrderOut]:
    """The caller's orders, newest first (``orders:read_all``: everyone's, or ``user_id``'s)."""
    page = await request.app[ORDERS_SERVICE].list(
        principal, limit=limit, cursor=cursor, user_id=user_id
    )
    return Page[OrderOut](items=[order_out(v) for v in page.items], next_cursor=page.next_cursor)


@router.get("/orders/{order_id}", response=OrderOut, auth=True, responses=_HIDDEN)
async def get_order(request: web.Request, principal: Principal, order_id: OrderId) -> OrderOut:
    """One order (its owner, or a holder of ``orders:read_all``)."""
    return order_out(await request.app[ORDERS_SERVICE].get(order_id, principal))


@router.get("/orders/{order_id}/events", response=list[OrderEventOut], auth=True, responses=_HIDDEN)
async def order_events(
    request: web.Request, principal: Principal, order_id: OrderId
) -> list[OrderEventOut]:
    """The order's event history, oldest first (its owner, or ``orders:read_all``)."""
    events = await request.app[ORDERS_SERVICE].history(order_id, principal)
    return [event_out(e) for e in events]


@router.post(
    "/orders/{order_id}/cancel",
    status=202,
    response=OrderOut,
    auth=True,
    responses={
        **_HIDDEN,
        403: "Someone else's order, without `orders:cancel_any`",
        409: "The order has shipped or was rejected",
    },
)
async def cancel_order(request: web.Request, principal: Principal, order_id: OrderId) -> OrderOut:
    """Cancel an order until it ships (its owner, or ``orders:cancel_any``): stock is
    released and the payment refunded."""
    return order_out(await request.app[ORDERS_SERVICE].cancel(order_id, principal))


@router.post(
    "/orders/{order_id}/ship",
    response=OrderOut,
    permissions={"orders:ship"},
    responses={**_HIDDEN, 409: "The order is not confirmed"},
)
async def ship_order(request: web.Request, principal: Principal, order_id: OrderId) -> OrderOut:
    """Ship a confirmed order (``orders:ship``): its reserved stock leaves the warehouse."""
    return order_out(await request.app[ORDERS_SERVICE].ship(order_id, principal))

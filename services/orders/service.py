"""Business rules of the orders service: placing, reading, cancelling and shipping orders.

No aiohttp, no SQL. Every change of an order follows one path (``transition_in``): lock the
order's saga row (serializing its writers), replay its stream, let a decision function read the
state and return a ``Change`` (events to append, bus events to publish, the saga's next step),
then append the events with the version read, project them into the read model and move the
saga to its next step (one statement: ``append_projected``), and record the bus events in the
outbox, all in one transaction. Metrics are observed and the cached view
invalidated once it has committed. The row lock keeps writers of one order from racing; the
stream's unique ``(order_id, seq)`` is the optimistic-concurrency backstop that turns any writer
that skipped it into a ``ConcurrentAppend`` (409, or a retried bus message) instead of a fork.

Reads (``GET /orders``, ``GET /orders/{id}``) are served by the read model (``order_views``);
``GET /orders/{id}/events`` by the stream itself. One order's view is cached (``order:{id}``,
in-process → Redis → memcached) when the service has a cache: clients poll it while the saga
runs. Every committed transition invalidates it (``committed``), in every instance.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from core.auth import Principal
from core.bus import Event, Outbox
from core.cache import Cache, cached
from core.context import get_correlation_id
from core.db import Connection
from core.errors import Forbidden, NotFound, ValidationFailed
from core.pagination import InvalidCursor, decode_cursor, encode_cursor
from services.orders.aggregate import NewEvent, Order, StoredEvent
from services.orders.catalog import CatalogClient, UnknownProducts
from services.orders.events import OrderCancelled, OrderLine, OrderPlaced, OrderShipped
from services.orders.metrics import OrderMetrics
from services.orders.projection import OrderView
from services.orders.repository import OrdersRepository, SagaRow, StepChange
from services.orders.schemas import OrderIn
from services.orders.settings import Settings

__all__ = [
    "Change",
    "Decision",
    "OrderNotFound",
    "OrderPage",
    "OrdersService",
    "Transition",
]

log = logging.getLogger("services.orders")

VIEW_TTL = 60.0
# Permissions (granted by roles, see API.md) that reach beyond one's own orders.
READ_ALL = "orders:read_all"
CANCEL_ANY = "orders:cancel_any"


class OrderNotFound(NotFound):
    """No such order, or not one the caller may see (404)."""

    def __init__(self) -> None:
        super().__init__("No such order")


@dataclass
class Change:
    """What a decision makes of an order: events, bus events, the saga's next step."""

    events: list[NewEvent]
    publish: list[Event] = field(default_factory=list)
    step: str | None = None
    deadline_in: float | None = None
    outcome: str | None = None  # confirmed | rejected | cancelled | shipped, for metrics
    keep_lease: bool = False
    # Lease the saga for this many seconds in the same transaction: the instance that commits
    # runs the next step itself at once instead of leaving it to a poll's claim.
    lease_in: float | None = None


Decision = Callable[[Order, SagaRow], Change | None]


@dataclass(frozen=True, slots=True)
class Transition:
    """A committed change: the order after it, and the saga as it was before."""

    order: Order
    saga: SagaRow
    change: Change | None


@dataclass(frozen=True, slots=True)
class OrderPage:
    """A page of order views, newest first."""

    items: list[OrderView]
    next_cursor: str | None


class OrdersService:
    """Orders: placement, reads, cancellation, shipping, and the saga's transitions."""

    def __init__(
        self,
        repository: OrdersRepository,
        *,
        outbox: Outbox,
        catalog: CatalogClient,
        settings: Settings,
        metrics: OrderMetrics,
        cache: Cache | None = None,
    ) -> None:
        self.repository = repository
        self.outbox = outbox
        self.catalog = catalog
        self.settings = settings
        self.metrics = metrics
        self.cache = cache

    # the one write path ------------------------------------------------------------------------

    async def transition_in(
        self, conn: Connection, order_id: uuid.UUID, decide: Decision
    ) -> Transition | None:
        """Apply ``decide`` to the order inside the caller's transaction (``None``: no saga of
        that order). Call ``committed`` with the result once the transaction has committed."""
        saga = await self.repository.lock_saga(conn, order_id)
        if saga is None:
            return None
        stream = await self.repository.load_stream(order_id, conn)
        order = Order.replay(order_id, stream)
        change = decide(order, saga)
        if change is None:
            return Transition(order, saga, None)
        step = None
        if change.step is not None:
            step = StepChange(change.step, change.deadline_in, change.keep_lease, change.lease_in)
        if change.events:
            stored, _ = await self.repository.append_projected(
                conn, order_id, order.version, change.events, before=stream, step=step
            )
            for event in stored:
                order.apply(event)
        elif step is not None:
            await self.repository.set_step(
                conn,
                order_id,
                step.step,
                deadline_in=step.deadline_in,
                keep_lease=step.keep_lease,
                lease_in=step.lease_in,
            )
        if change.publish:
            await self.outbox.publish_many(conn, change.publish)
        return Transition(order, saga, change)

    async def transition(self, order_id: uuid.UUID, decide: Decision) -> Transition | None:
        """``transition_in`` in a transaction of its own, observed after it commits."""
        async with self.repository.transaction() as conn:
            result = await self.transition_in(conn, order_id, decide)
        if result is not None:
            await self.committed(result)
        return result

    async def committed(self, transition: Transition) -> None:
        """After a transition's transaction has committed: count it, uncache the order's view."""
        self.observe(transition)
        if transition.change is not None and self.cache is not None:
            await self._cached_view.invalidate(transition.order.id)

    def observe(self, transition: Transition) -> None:
        """Count a committed transition in the business metrics."""
        change, order, saga = transition.change, transition.order, transition.saga
        if change is None or change.outcome is None:
            return
        ended = order.updated_at or saga.now
        seconds = max(0.0, ended.timestamp() - saga.started_at.timestamp())
        if change.outcome == "confirmed":
            self.metrics.confirmed.inc()
            self.metrics.revenue.labels(order.currency).inc(order.total_cents)
            self.metrics.saga_duration.labels("confirmed").observe(seconds)
        elif change.outcome == "rejected":
            self.metrics.rejected.labels(order.reason or "unknown").inc()
            self.metrics.saga_duration.labels("rejected").observe(seconds)
        elif change.outcome == "cancelled":
            self.metrics.cancelled.labels(_status_before(order)).inc()
            if saga.step != "done":
                self.metrics.saga_duration.labels("cancelled").observe(seconds)
        elif change.outcome == "refunded":
            self.metrics.refunded.labels(order.currency).inc(order.total_cents)
        elif change.outcome == "shipped":
            self.metrics.shipped.inc()

    # commands ----------------------------------------------------------------------------------

    async def place(
        self, user_id: uuid.UUID, body: OrderIn, *, idempotency_key: str | None = None
    ) -> OrderView:
        """Place an order: price its lines from the catalog, record ``order.placed``, start the
        saga; the order is ``pending`` until the saga ends.

        With ``idempotency_key``, the key is recorded in the placing transaction: the same key
        and body again give the order it placed (as it is now), another body a 422. The HTTP
        layer replays the first response from Redis; this is what holds when Redis never got
        that response (a crash right after the commit)."""
        product_ids = [line.product_id for line in body.items]
        try:
            prices = await self.catalog.prices(product_ids)
        except UnknownProducts as exc:
            unknown = set(exc.product_ids)
            raise ValidationFailed(
                [
                    {
                        "loc": ["body", "items", i, "product_id"],
                        "msg": "No such product",
                        "type": "unknown_product",
                    }
                    for i, line in enumerate(body.items)
                    if line.product_id in unknown
                ],
                detail="Some products do not exist",
            ) from exc
        currencies = {price.currency for price in prices.values()}
        if len(currencies) != 1:
            raise ValidationFailed(
                [
                    {
                        "loc": ["body", "items"],
                        "msg": "All products of an order must have the same currency",
                        "type": "mixed_currencies",
                    }
                ]
            )
        currency = currencies.pop()
        lines = [
            OrderLine(
                product_id=line.product_id,
                quantity=line.quantity,
                unit_price_cents=prices[line.product_id].price_cents,
            )
            for line in body.items
        ]
        total = sum(line.quantity * line.unit_price_cents for line in lines)
        order_id = uuid.uuid4()
        placed = NewEvent(
            "order.placed",
            {
                "user_id": str(user_id),
                "items": [line.model_dump(mode="json") for line in lines],
                "total_cents": total,
                "currency": currency,
                "shipping_address": dict(body.shipping_address),
            },
        )
        async with self.repository.transaction() as conn:
            if idempotency_key is not None:
                earlier = await self.repository.claim_request(
                    conn,
                    user_id=user_id,
                    key_digest=hashlib.sha256(idempotency_key.encode()).hexdigest(),
                    fingerprint=hashlib.sha256(body.model_dump_json().encode()).hexdigest(),
                    order_id=order_id,
                )
                if earlier is not None:
                    return await self._placed_before(user_id, body, *earlier)
            await self.repository.create_saga(
                conn,
                order_id,
                token=body.payment.token,
                deadline_in=self.settings.reservation_timeout,
                correlation_id=get_correlation_id(),
            )
            _, view = await self.repository.append_projected(conn, order_id, 0, [placed], before=[])
            await self.outbox.publish(
                conn,
                OrderPlaced(
                    order_id=order_id,
                    user_id=user_id,
                    items=lines,
                    total_cents=total,
                    currency=currency,
                ),
            )
        self.metrics.placed.inc()
        assert view is not None  # an order.placed always makes a view
        return view

    async def _placed_before(
        self, user_id: uuid.UUID, body: OrderIn, order_id: uuid.UUID, fingerprint: str
    ) -> OrderView:
        if fingerprint != hashlib.sha256(body.model_dump_json().encode()).hexdigest():
            raise ValidationFailed(
                [
                    {
                        "loc": ["header", "Idempotency-Key"],
                        "msg": "this key was used with a different request",
                        "type": "idempotency_key_reused",
                    }
                ]
            )
        view = await self.repository.get_view(order_id)
        if view is None or view.user_id != user_id:
            raise NotFound("No such order")
        return view

    async def cancel(self, order_id: uuid.UUID, principal: Principal) -> OrderView:
        """Cancel an order that has not shipped: its stock is released (``order.cancelled``)
        and an authorized payment refunded (by the saga's refund step).

        Its owner may cancel it, and so may a holder of ``orders:cancel_any``; a holder of
        ``orders:read_all`` alone sees the order but gets ``Forbidden``."""
        view = await self._visible(order_id, principal)
        if str(view.user_id) != principal.user_id and not principal.has_permission(CANCEL_ANY):
            raise Forbidden("Cancelling someone else's order requires orders:cancel_any")

        def decide(order: Order, saga: SagaRow) -> Change | None:
            if order.status == "cancelled":
                return None  # cancelling twice changes nothing
            order.ensure_cancellable()
            refund = order.payment == "authorized" or saga.step in ("authorizing", "refunding")
            return Change(
                # A payment call in flight keeps its lease: the refund waits for its outcome.
                keep_lease=saga.step == "authorizing",
                events=[
                    NewEvent("order.cancelled", {"by": principal.user_id, "reason": "cancelled"})
                ],
                publish=[OrderCancelled(order_id=order_id, reason="cancelled")],
                step="refunding" if refund else "done",
                outcome="cancelled",
            )

        await self.transition(order_id, decide)
        return await self.get(order_id, principal)

    async def ship(self, order_id: uuid.UUID, principal: Principal) -> OrderView:
        """Ship a confirmed order (``orders:ship``, checked by the route): its reserved stock
        leaves ``on_hand``."""
        await self._visible(order_id, None)

        def decide(order: Order, saga: SagaRow) -> Change | None:
            order.ensure_shippable()
            return Change(
                events=[NewEvent("order.shipped", {"by": principal.user_id})],
                publish=[OrderShipped(order_id=order_id)],
                outcome="shipped",
            )

        await self.transition(order_id, decide)
        return await self.get(order_id, None)

    # reads -------------------------------------------------------------------------------------

    @cached(
        cache=lambda self: self.cache,
        ttl=VIEW_TTL,
        key="order:{order_id}",
        name="orders.view",
    )
    async def _cached_view(self, order_id: uuid.UUID) -> OrderView | None:
        return await self.repository.get_view(order_id)

    async def _visible(self, order_id: uuid.UUID, principal: Principal | None) -> OrderView:
        if self.cache is not None:
            view = await self._cached_view(order_id)
        else:
            view = await self.repository.get_view(order_id)
        if view is None:
            raise OrderNotFound()
        if (
            principal is not None
            and not principal.has_permission(READ_ALL)
            and str(view.user_id) != principal.user_id
        ):
            raise OrderNotFound()  # someone else's order is not even acknowledged
        return view

    async def get(self, order_id: uuid.UUID, principal: Principal | None) -> OrderView:
        """An order from the read model (``principal``: only if theirs, or ``orders:read_all``)."""
        return await self._visible(order_id, principal)

    async def history(self, order_id: uuid.UUID, principal: Principal) -> list[StoredEvent]:
        """The order's events, oldest first."""
        await self._visible(order_id, principal)
        return await self.repository.load_stream(order_id)

    async def list(
        self,
        principal: Principal,
        *,
        limit: int,
        cursor: str | None,
        user_id: uuid.UUID | None = None,
    ) -> OrderPage:
        """The caller's orders, newest first; ``orders:read_all`` sees everyone's (or one
        ``user_id``'s)."""
        if not principal.has_permission(READ_ALL):
            user_id = uuid.UUID(principal.user_id)
        after = None
        if cursor is not None:
            created, last = decode_cursor(cursor, 2)
            try:
                after = (datetime.fromisoformat(created), uuid.UUID(last))
            except (TypeError, ValueError) as exc:
                raise InvalidCursor() from exc
        views = await self.repository.list_views(user_id=user_id, limit=limit + 1, after=after)
        next_cursor = None
        if len(views) > limit:
            views = views[:limit]
            last = views[-1]
            next_cursor = encode_cursor(last.created_at.isoformat(), str(last.id))
        return OrderPage(views, next_cursor)


def _status_before(order: Order) -> str:
    """The status a just-cancelled order had (confirmed if its payment went through)."""
    return "confirmed" if order.payment == "authorized" else "pending"

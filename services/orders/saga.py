"""The order saga's orchestrator: a persisted state machine driven by events and deadlines.

Steps (``order_sagas.step``), each written in the transaction that appends the order's events:

``reserving``
    ``order.placed`` went out; waiting for the products service. ``inventory.reserved`` moves
    on to ``authorizing``; ``inventory.reservation_failed`` rejects the order (``out_of_stock``
    or ``unknown_product``: nothing was reserved); no answer by the deadline rejects it
    (``reservation_timeout``) and publishes ``order.cancelled``, which releases whatever the
    products service reserves later (it keeps a tombstone for an order it has not seen yet).
``authorizing``
    Stock is held. The instance that records the reservation leases the saga in that
    transaction and asks the payment provider as soon as it commits (renewing the lease while
    the call runs); should it die first, the lease expires and a poll of any instance claims it.
    Authorized: ``confirmed``. Declined: ``rejected``/``payment_declined`` and the stock
    released. No answer by the deadline: ``rejected``/``payment_timeout``, the
    stock released, and the payment voided (``refunding``), since its outcome is unknown.
``refunding``
    A payment may have been taken and must be given back (a timed-out authorization, a user's
    cancellation, an authorization that arrived after the order was cancelled). A worker
    leases the saga and refunds (idempotent per order), then ``done``.
``done``
    Nothing left to do.

A restarted service resumes every saga from its row: ``reserving`` sagas wait for answers that
sit in the durable queue or for their deadline; leases of the dead instance expire (they last
``saga_lease`` seconds unless renewed) and the steps run again, before or after their deadline.
The provider's idempotency per order keeps a retried authorization from charging twice, and
each transition re-checks the step under the row lock, so a late or duplicated answer changes
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from core.bus import Event
from core.context import correlation_id
from services.orders.aggregate import NewEvent, Order
from services.orders.events import (
    OrderConfirmed,
    OrderRejected,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentRefunded,
)
from services.orders.payment import PaymentProvider, PaymentResult, RefundResult
from services.orders.repository import SagaRow
from services.orders.service import Change, Decision, OrdersService, Transition
from services.products.events import InventoryReservationFailed, InventoryReserved

__all__ = [
    "SagaRunner",
    "on_payment",
    "on_payment_timeout",
    "on_refund",
    "on_released",
    "on_reservation_failed",
    "on_reservation_timeout",
    "on_reserved",
]

log = logging.getLogger("services.orders.saga")


def _due(saga: SagaRow) -> bool:
    return saga.deadline is not None and saga.now >= saga.deadline


def _reject(order: Order, reason: str) -> tuple[NewEvent, list[Event]]:
    """The rejection; the products service releases whatever stock the order holds when it
    sees ``order.rejected`` (an order rejected is never announced as cancelled)."""
    assert order.user_id is not None
    publish: list[Event] = [OrderRejected(order_id=order.id, user_id=order.user_id, reason=reason)]
    return NewEvent("order.rejected", {"reason": reason}), publish


# decisions (pure: state in, change out) --------------------------------------------------------


def on_reserved(
    event: InventoryReserved, payment_timeout: float, lease: float | None = None
) -> Decision:
    """``inventory.reserved``: hold on, authorize the payment next; with ``lease``, the saga is
    leased to the instance that commits this, which authorizes right away
    (``SagaRunner.committed``)."""

    def decide(order: Order, saga: SagaRow) -> Change | None:
        if saga.step != "reserving" or order.status != "pending":
            log.info("order %s: late inventory.reserved at step %s", order.id, saga.step)
            return None  # the order.cancelled already sent releases it
        items = [item.model_dump(mode="json") for item in event.items]
        return Change(
            events=[NewEvent("stock.reserved", {"items": items})],
            step="authorizing",
            deadline_in=payment_timeout,
            lease_in=lease,
        )

    return decide


def on_reservation_failed(event: InventoryReservationFailed) -> Decision:
    """``inventory.reservation_failed``: nothing was reserved; reject."""

    def decide(order: Order, saga: SagaRow) -> Change | None:
        if saga.step != "reserving" or order.status != "pending":
            return None
        rejected, publish = _reject(order, event.reason)
        failed = NewEvent(
            "stock.reservation_failed",
            {"reason": event.reason, "product_ids": [str(p) for p in event.product_ids]},
        )
        return Change([failed, rejected], publish, step="done", outcome="rejected")

    return decide


def on_released(items: list[dict[str, object]]) -> Decision:
    """``inventory.released``: record it in the order's history."""

    def decide(order: Order, saga: SagaRow) -> Change | None:
        if not order.exists or not items or order.stock in ("released", "committed"):
            return None
        return Change([NewEvent("stock.released", {"items": items})])

    return decide


def on_reservation_timeout(order: Order, saga: SagaRow) -> Change | None:
    """No answer from the products service in time: reject, release whatever comes later."""
    if saga.step != "reserving" or order.status != "pending" or not _due(saga):
        return None
    rejected, publish = _reject(order, "reservation_timeout")
    return Change([rejected], publish, step="done", outcome="rejected")


def on_payment(result: PaymentResult) -> Decision:
    """The provider answered."""

    def decide(order: Order, saga: SagaRow) -> Change | None:
        assert order.user_id is not None
        if result.status == "declined":
            if saga.step != "authorizing" or order.status != "pending":
                return None
            rejected, publish = _reject(order, "payment_declined")
            declined = PaymentDeclined(
                order_id=order.id, amount_cents=result.amount_cents, currency=order.currency
            )
            return Change(
                [NewEvent("payment.declined", {"amount_cents": result.amount_cents}), rejected],
                [declined, *publish],
                step="done",
                outcome="rejected",
            )
        authorized = NewEvent(
            "payment.authorized",
            {"payment_id": str(result.payment_id), "amount_cents": result.amount_cents},
        )
        authorized_event = PaymentAuthorized(
            order_id=order.id,
            payment_id=result.payment_id,
            amount_cents=result.amount_cents,
            currency=order.currency,
        )
        if saga.step == "authorizing" and order.status == "pending":
            return Change(
                [authorized, NewEvent("order.confirmed")],
                [
                    authorized_event,
                    OrderConfirmed(
                        order_id=order.id,
                        user_id=order.user_id,
                        total_cents=order.total_cents,
                        currency=order.currency,
                    ),
                ],
                step="done",
                outcome="confirmed",
            )
        if order.payment in ("authorized", "refunded"):
            return None  # a duplicate answer
        # The order was cancelled or timed out meanwhile: the money goes back.
        return Change([authorized], [authorized_event], step="refunding")

    return decide


def on_payment_timeout(*, force: bool) -> Decision:
    """The provider did not answer by the deadline: reject, release, void the payment."""

    def decide(order: Order, saga: SagaRow) -> Change | None:
        if saga.step != "authorizing" or order.status != "pending":
            return None
        if not force and not _due(saga):
            return None
        rejected, publish = _reject(order, "payment_timeout")
        return Change(
            [NewEvent("payment.timed_out"), rejected],
            publish,
            step="refunding",
            outcome="rejected",
        )

    return decide


def on_refund(result: RefundResult | None) -> Decision:
    """The refund step ran: record the refund (if any money was taken), end the saga."""

    def decide(order: Order, saga: SagaRow) -> Change | None:
        if saga.step != "refunding":
            return None
        if result is None or order.payment == "refunded":
            return Change([], step="done")
        return Change(
            [
                NewEvent(
                    "payment.refunded",
                    {"payment_id": str(result.payment_id), "amount_cents": result.amount_cents},
                )
            ],
            [
                PaymentRefunded(
                    order_id=order.id,
                    payment_id=result.payment_id,
                    amount_cents=result.amount_cents,
                    currency=order.currency,
                )
            ],
            step="done",
            outcome="refunded",
        )

    return decide


# the runner ------------------------------------------------------------------------------------


class SagaRunner:
    """Runs the saga's steps that call out: payments and refunds, and expired reservations.

    A saga that this instance moves to ``authorizing`` under a lease (``on_reserved`` with a
    lease) has its payment step started as soon as that transaction commits (``committed``):
    no poll between the reservation and the payment. Everything else is found by polling every
    ``poll_interval`` seconds, and whenever ``wake`` is called: deadlines passed, refunds due,
    steps left behind by a stopped instance. Several instances share the work through leases of
    ``lease`` seconds, renewed at every poll while the step runs (so ``poll_interval`` <
    ``lease``).
    """

    def __init__(
        self,
        service: OrdersService,
        provider: PaymentProvider,
        *,
        poll_interval: float,
        lease: float,
        batch_size: int = 100,
    ) -> None:
        self.service = service
        self.provider = provider
        self.poll_interval = poll_interval
        self.lease = lease
        self.batch_size = batch_size
        self._running: set[uuid.UUID] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._steps: set[asyncio.Task[None]] = set()
        self._stopped = False

    async def start(self) -> None:
        """Start running in the background."""
        self._stopped = False
        self._task = asyncio.create_task(self._run(), name="order-saga-runner")

    async def stop(self) -> None:
        """Stop the loop and the steps in flight (their leases expire; another run resumes)."""
        self._stopped = True
        tasks = [t for t in (self._task, *self._steps) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Look for due work now rather than at the next poll."""
        self._wake.set()

    def committed(self, transition: Transition) -> None:
        """After a transition committed: start the payment step it leased to this instance,
        or look for the work it made due (a refund)."""
        change = transition.change
        if change is None or change.step is None:
            return
        if change.step == "authorizing" and change.lease_in is not None:
            if self._stopped:
                return  # the lease expires and a running instance claims the step
            saga = dataclasses.replace(
                transition.saga,
                step="authorizing",
                deadline=transition.saga.now + timedelta(seconds=change.deadline_in or 0.0),
            )
            self._spawn(saga.order_id, self._authorize(saga, transition.order))
        elif change.step != "done":
            self.wake()

    async def run_once(self) -> int:
        """Start every due step once; return how many were started."""
        started = 0
        repository = self.service.repository
        await repository.renew(list(self._running), lease=self.lease)
        for order_id in await repository.expired("reserving", self.batch_size):
            await self.service.transition(order_id, on_reservation_timeout)
            started += 1
        for step, run in (("authorizing", self._authorize), ("refunding", self._refund)):
            claimed = await repository.claim(
                step, self.batch_size, lease=self.lease, skip=list(self._running)
            )
            for saga in claimed:
                self._spawn(saga.order_id, run(saga))
                started += 1
        return started

    def _spawn(self, order_id: uuid.UUID, coro: Coroutine[Any, Any, None]) -> None:
        self._running.add(order_id)
        task = asyncio.create_task(coro)
        self._steps.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._steps.discard(task)
            self._running.discard(order_id)

        task.add_done_callback(done)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("saga round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _authorize(self, saga: SagaRow, order: Order | None = None) -> None:
        token = correlation_id.set(saga.correlation_id)
        try:
            transition = await self._authorize_step(saga, order)
            change = transition.change if transition is not None else None
            if change is None or change.step is None:
                # Nothing moved the saga (a cancellation during the call kept the lease for
                # this outcome, or a duplicate answer): give the lease up for the refund step.
                await self.service.repository.release(saga.order_id)
                self.wake()
            elif change.step == "refunding":
                self.wake()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("order %s: payment step failed (retried after its lease)", saga.order_id)
        finally:
            correlation_id.reset(token)

    async def _authorize_step(self, saga: SagaRow, order: Order | None) -> Transition | None:
        """Ask the provider, then record its answer (``order``: the order as the caller has
        just committed it, else it is read)."""
        order_id = saga.order_id
        if _due(saga):
            return await self.service.transition(order_id, on_payment_timeout(force=False))
        if order is None:
            order = Order.replay(order_id, await self.service.repository.load_stream(order_id))
        assert saga.deadline is not None
        remaining = (saga.deadline - saga.now).total_seconds()
        try:
            async with asyncio.timeout(remaining):
                result = await self.provider.authorize(
                    order_id,
                    token=saga.payment_token,
                    amount_cents=order.total_cents,
                    currency=order.currency,
                )
        except TimeoutError:
            log.warning("order %s: no answer from the payment provider in time", order_id)
            return await self.service.transition(order_id, on_payment_timeout(force=True))
        return await self.service.transition(order_id, on_payment(result))

    async def _refund(self, saga: SagaRow) -> None:
        token = correlation_id.set(saga.correlation_id)
        try:
            result = await self.provider.refund(saga.order_id)
            await self.service.transition(saga.order_id, on_refund(result))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("order %s: refund failed (retried when its lease ends)", saga.order_id)
        finally:
            correlation_id.reset(token)

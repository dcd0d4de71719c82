"""The order's state machine without a server: the aggregate's fold and guards, and the saga's
decisions (state in, change out), driven through whole lifecycles in memory.

A decision's ``Change`` is applied the way ``OrdersService.transition_in`` applies it: its events
are appended to the stream with the next ``seq`` and folded into the order.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest

from services.orders.aggregate import (
    FINAL_STATUSES,
    NewEvent,
    Order,
    OrderStateConflict,
    StoredEvent,
)
from services.orders.events import (
    OrderConfirmed,
    OrderRejected,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentRefunded,
)
from services.orders.payment import PaymentResult, RefundResult
from services.orders.repository import SagaRow
from services.orders.saga import (
    on_payment,
    on_payment_timeout,
    on_refund,
    on_released,
    on_reservation_failed,
    on_reservation_timeout,
    on_reserved,
)
from services.orders.service import Change, Decision
from services.products.events import (
    InventoryReservationFailed,
    InventoryReserved,
    ReservedItem,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ORDER_ID = uuid.UUID(int=1)
USER_ID = uuid.UUID(int=2)
MUG = uuid.UUID(int=3)
LAMP = uuid.UUID(int=4)
PAYMENT_ID = uuid.UUID(int=5)
STAFF = str(uuid.UUID(int=6))
TOTAL = 2 * 150 + 1 * 999  # 1299
ITEMS: list[dict[str, object]] = [
    {"product_id": str(MUG), "quantity": 2},
    {"product_id": str(LAMP), "quantity": 1},
]
PAYMENT_TIMEOUT = 7.5

FailureReason = Literal["out_of_stock", "unknown_product"]


def _placed_data() -> dict[str, Any]:
    return {
        "user_id": str(USER_ID),
        "items": [
            {"product_id": str(MUG), "quantity": 2, "unit_price_cents": 150},
            {"product_id": str(LAMP), "quantity": 1, "unit_price_cents": 999},
        ],
        "total_cents": TOTAL,
        "currency": "EUR",
        "shipping_address": {"city": "Oslo"},
    }


class Stream:
    """An order's stream in memory: ``append`` numbers events as the store does."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self.order = Order(ORDER_ID)
        self.append(NewEvent("order.placed", _placed_data()))

    def append(self, *events: NewEvent) -> None:
        for event in events:
            stored = StoredEvent(
                ORDER_ID,
                len(self.events) + 1,
                event.type,
                event.data,
                NOW + timedelta(seconds=len(self.events)),
            )
            self.events.append(stored)
            self.order.apply(stored)

    def decide(self, decision: Decision, saga: SagaRow) -> Change | None:
        """Run a decision and, if it changes something, append its events."""
        change = decision(self.order, saga)
        if change is not None:
            self.append(*change.events)
        return change

    @property
    def types(self) -> list[str]:
        return [event.type for event in self.events]


def _saga(
    step: str, *, deadline_in: float | None = 10.0, now: datetime = NOW, token: str = "tok_visa"
) -> SagaRow:
    return SagaRow(
        order_id=ORDER_ID,
        step=step,
        deadline=None if deadline_in is None else NOW + timedelta(seconds=deadline_in),
        lease_until=None,
        payment_token=token,
        correlation_id="corr-1",
        started_at=NOW - timedelta(seconds=1),
        now=now,
    )


def _reserved() -> InventoryReserved:
    return InventoryReserved(
        order_id=ORDER_ID,
        items=[ReservedItem(product_id=MUG, quantity=2), ReservedItem(product_id=LAMP, quantity=1)],
    )


def _failed(reason: FailureReason) -> InventoryReservationFailed:
    return InventoryReservationFailed(order_id=ORDER_ID, reason=reason, product_ids=[LAMP])


def _authorized() -> PaymentResult:
    return PaymentResult("authorized", PAYMENT_ID, TOTAL)


def _declined() -> PaymentResult:
    return PaymentResult("declined", PAYMENT_ID, TOTAL)


def _reserved_stream() -> Stream:
    stream = Stream()
    change = stream.decide(on_reserved(_reserved(), PAYMENT_TIMEOUT), _saga("reserving"))
    assert change is not None
    return stream


def _confirmed_stream() -> Stream:
    stream = _reserved_stream()
    assert stream.decide(on_payment(_authorized()), _saga("authorizing")) is not None
    return stream


# the aggregate ----------------------------------------------------------------------------------


def test_a_placed_order_is_pending_with_its_priced_lines() -> None:
    order = Stream().order

    assert order.exists
    assert not order.final
    assert (order.status, order.version, order.stock, order.payment) == (
        "pending",
        1,
        "none",
        "none",
    )
    assert (order.user_id, order.total_cents, order.currency) == (USER_ID, 1299, "EUR")
    assert [(line.product_id, line.quantity, line.unit_price_cents) for line in order.items] == [
        (MUG, 2, 150),
        (LAMP, 1, 999),
    ]
    assert order.shipping_address == {"city": "Oslo"}
    assert order.created_at == NOW
    assert order.payment_id is None
    assert order.reason is None


def test_an_empty_stream_is_an_order_that_does_not_exist() -> None:
    order = Order.replay(ORDER_ID, [])

    assert not order.exists
    assert (order.version, order.status, order.user_id) == (0, "pending", None)


def test_replay_gives_the_state_of_folding_one_event_at_a_time() -> None:
    stream = _confirmed_stream()

    replayed = Order.replay(ORDER_ID, stream.events)

    assert replayed == stream.order
    assert replayed.version == 4
    assert replayed.updated_at == NOW + timedelta(seconds=3)
    assert replayed.created_at == NOW


@pytest.mark.parametrize(
    ("seqs", "message"),
    [
        ([2], "event 2 after 0"),
        ([1, 1], "event 1 after 1"),
        ([1, 2, 4], "event 4 after 2"),
        ([1, 3, 2], "event 3 after 1"),
    ],
)
def test_replay_refuses_a_stream_out_of_seq_order(seqs: list[int], message: str) -> None:
    types = ["order.placed", "stock.reserved", "order.confirmed", "order.shipped"]
    events = [
        StoredEvent(
            ORDER_ID,
            seq,
            types[seq - 1],
            _placed_data() if seq == 1 else {"items": [], "by": STAFF},
            NOW,
        )
        for seq in seqs
    ]

    with pytest.raises(ValueError, match=message):
        Order.replay(ORDER_ID, events)


def test_a_refused_event_leaves_the_state_as_it_was() -> None:
    stream = _reserved_stream()
    before = Order.replay(ORDER_ID, stream.events)

    with pytest.raises(ValueError, match="event 2 after 2"):
        stream.order.apply(StoredEvent(ORDER_ID, 2, "order.confirmed", {}, NOW))

    assert stream.order == before


def test_an_unknown_event_type_is_refused() -> None:
    with pytest.raises(ValueError, match=re.escape("unknown order event 'order.teleported'")):
        Stream().append(NewEvent("order.teleported"))


def test_a_cancellation_keeps_its_reason_or_says_cancelled() -> None:
    plain = Stream()
    plain.append(NewEvent("order.cancelled", {"by": STAFF}))
    explained = Stream()
    explained.append(NewEvent("order.cancelled", {"by": STAFF, "reason": "fraud"}))

    assert (plain.order.status, plain.order.reason) == ("cancelled", "cancelled")
    assert (explained.order.status, explained.order.reason) == ("cancelled", "fraud")
    assert plain.order.final


def test_a_release_after_shipping_keeps_the_stock_committed() -> None:
    stream = _confirmed_stream()
    stream.append(NewEvent("order.shipped", {"by": STAFF}))
    assert stream.order.stock == "committed"

    stream.append(NewEvent("stock.released", {"items": ITEMS}))

    assert (stream.order.status, stream.order.stock) == ("shipped", "committed")


def test_the_final_statuses_are_rejected_cancelled_and_shipped() -> None:
    assert frozenset({"rejected", "cancelled", "shipped"}) == FINAL_STATUSES


# guards -----------------------------------------------------------------------------------------


def _in_status(status: str) -> Order:
    """An order whose stream took it to ``status`` by the usual road."""
    if status == "pending":
        return _reserved_stream().order
    if status == "confirmed":
        return _confirmed_stream().order
    stream = _confirmed_stream() if status == "shipped" else _reserved_stream()
    event = {
        "rejected": NewEvent("order.rejected", {"reason": "payment_declined"}),
        "cancelled": NewEvent("order.cancelled", {"by": STAFF, "reason": "cancelled"}),
        "shipped": NewEvent("order.shipped", {"by": STAFF}),
    }[status]
    stream.append(event)
    assert stream.order.status == status
    return stream.order


@pytest.mark.parametrize("status", ["pending", "confirmed"])
def test_a_pending_or_confirmed_order_may_be_cancelled(status: str) -> None:
    order = _in_status(status)

    order.ensure_cancellable()  # does not raise

    assert not order.final


@pytest.mark.parametrize("status", ["rejected", "cancelled", "shipped"])
def test_a_final_order_cannot_be_cancelled(status: str) -> None:
    order = _in_status(status)

    with pytest.raises(OrderStateConflict) as info:
        order.ensure_cancellable()

    assert info.value.status == 409
    assert info.value.detail == f"An order that is {status} cannot be cancelled"
    assert order.final


def test_only_a_confirmed_order_ships() -> None:
    _in_status("confirmed").ensure_shippable()  # does not raise
    for status in ("pending", "rejected", "cancelled", "shipped"):
        with pytest.raises(OrderStateConflict) as info:
            _in_status(status).ensure_shippable()
        assert info.value.status == 409
        assert info.value.detail == f"Only a confirmed order ships; this one is {status}"


# the happy path ---------------------------------------------------------------------------------


def test_the_happy_path_placed_reserved_authorized_confirmed_shipped() -> None:
    stream = Stream()

    reserved = stream.decide(on_reserved(_reserved(), PAYMENT_TIMEOUT), _saga("reserving"))

    assert reserved == Change(
        events=[NewEvent("stock.reserved", {"items": ITEMS})],
        step="authorizing",
        deadline_in=PAYMENT_TIMEOUT,
    )
    assert (stream.order.status, stream.order.stock, stream.order.payment) == (
        "pending",
        "reserved",
        "none",
    )

    confirmed = stream.decide(on_payment(_authorized()), _saga("authorizing"))

    assert confirmed is not None
    assert confirmed.events == [
        NewEvent("payment.authorized", {"payment_id": str(PAYMENT_ID), "amount_cents": TOTAL}),
        NewEvent("order.confirmed"),
    ]
    assert confirmed.publish == [
        PaymentAuthorized(
            order_id=ORDER_ID, payment_id=PAYMENT_ID, amount_cents=TOTAL, currency="EUR"
        ),
        OrderConfirmed(order_id=ORDER_ID, user_id=USER_ID, total_cents=TOTAL, currency="EUR"),
    ]
    assert (confirmed.step, confirmed.outcome, confirmed.keep_lease) == ("done", "confirmed", False)
    assert (stream.order.status, stream.order.payment, stream.order.payment_id) == (
        "confirmed",
        "authorized",
        PAYMENT_ID,
    )

    stream.order.ensure_shippable()
    stream.append(NewEvent("order.shipped", {"by": STAFF}))

    assert stream.types == [
        "order.placed",
        "stock.reserved",
        "payment.authorized",
        "order.confirmed",
        "order.shipped",
    ]
    assert (stream.order.status, stream.order.stock, stream.order.version) == (
        "shipped",
        "committed",
        5,
    )
    assert stream.order.final
    # The products service's answer to the shipment changes nothing more.
    assert on_released(ITEMS)(stream.order, _saga("done")) is None


def test_a_repeated_answer_after_confirmation_changes_nothing() -> None:
    stream = _confirmed_stream()
    done = _saga("done")

    assert on_reserved(_reserved(), PAYMENT_TIMEOUT)(stream.order, done) is None
    assert on_reservation_failed(_failed("out_of_stock"))(stream.order, done) is None
    assert on_payment(_authorized())(stream.order, done) is None
    assert on_payment(_declined())(stream.order, done) is None
    assert on_payment_timeout(force=True)(stream.order, done) is None
    assert on_refund(None)(stream.order, done) is None
    assert stream.order.status == "confirmed"


# stock -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["out_of_stock", "unknown_product"])
def test_a_failed_reservation_rejects_the_order(reason: FailureReason) -> None:
    stream = Stream()

    change = stream.decide(on_reservation_failed(_failed(reason)), _saga("reserving"))

    assert change == Change(
        [
            NewEvent("stock.reservation_failed", {"reason": reason, "product_ids": [str(LAMP)]}),
            NewEvent("order.rejected", {"reason": reason}),
        ],
        [OrderRejected(order_id=ORDER_ID, user_id=USER_ID, reason=reason)],
        step="done",
        outcome="rejected",
    )
    assert (stream.order.status, stream.order.reason, stream.order.stock) == (
        "rejected",
        reason,
        "failed",
    )
    assert stream.order.payment == "none"
    assert stream.order.final
    with pytest.raises(OrderStateConflict):
        stream.order.ensure_cancellable()


def test_a_stock_answer_at_another_step_or_status_changes_nothing() -> None:
    pending = Stream().order
    cancelled = Stream()
    cancelled.append(NewEvent("order.cancelled", {"by": STAFF}))

    for step in ("authorizing", "refunding", "done"):
        assert on_reserved(_reserved(), PAYMENT_TIMEOUT)(pending, _saga(step)) is None
        assert on_reservation_failed(_failed("out_of_stock"))(pending, _saga(step)) is None
    # Cancelled while reserving: the order.cancelled already sent releases the stock.
    assert on_reserved(_reserved(), PAYMENT_TIMEOUT)(cancelled.order, _saga("reserving")) is None
    assert (
        on_reservation_failed(_failed("out_of_stock"))(cancelled.order, _saga("reserving")) is None
    )


@pytest.mark.parametrize(
    ("deadline_in", "expected"),
    [(None, False), (0.001, False), (0.0, True), (-5.0, True)],
)
def test_the_reservation_deadline_rejects_only_once_it_has_passed(
    deadline_in: float | None, expected: bool
) -> None:
    stream = Stream()

    change = stream.decide(on_reservation_timeout, _saga("reserving", deadline_in=deadline_in))

    if not expected:
        assert change is None
        assert stream.types == ["order.placed"]
        return
    assert change == Change(
        [NewEvent("order.rejected", {"reason": "reservation_timeout"})],
        [OrderRejected(order_id=ORDER_ID, user_id=USER_ID, reason="reservation_timeout")],
        step="done",
        outcome="rejected",
    )
    assert (stream.order.status, stream.order.reason, stream.order.stock) == (
        "rejected",
        "reservation_timeout",
        "none",
    )


def test_the_reservation_deadline_does_nothing_once_the_step_moved_on() -> None:
    order = _reserved_stream().order

    assert on_reservation_timeout(order, _saga("authorizing", deadline_in=-1)) is None
    assert on_reservation_timeout(Stream().order, _saga("done", deadline_in=-1)) is None


def test_a_release_is_recorded_once_and_only_with_items() -> None:
    stream = _reserved_stream()
    stream.append(NewEvent("order.rejected", {"reason": "payment_declined"}))

    assert on_released([])(stream.order, _saga("done")) is None
    change = stream.decide(on_released(ITEMS), _saga("done"))

    assert change == Change([NewEvent("stock.released", {"items": ITEMS})])
    assert change is not None
    assert (change.step, change.outcome) == (None, None)
    assert stream.order.stock == "released"
    assert on_released(ITEMS)(stream.order, _saga("done")) is None
    assert on_released(ITEMS)(Order(ORDER_ID), _saga("done")) is None  # no such order yet


# payment -----------------------------------------------------------------------------------------


def test_a_declined_payment_rejects_and_the_release_follows() -> None:
    stream = _reserved_stream()

    change = stream.decide(on_payment(_declined()), _saga("authorizing"))

    assert change == Change(
        [
            NewEvent("payment.declined", {"amount_cents": TOTAL}),
            NewEvent("order.rejected", {"reason": "payment_declined"}),
        ],
        [
            PaymentDeclined(order_id=ORDER_ID, amount_cents=TOTAL, currency="EUR"),
            OrderRejected(order_id=ORDER_ID, user_id=USER_ID, reason="payment_declined"),
        ],
        step="done",
        outcome="rejected",
    )
    assert (stream.order.status, stream.order.reason, stream.order.payment) == (
        "rejected",
        "payment_declined",
        "declined",
    )
    assert (stream.order.payment_id, stream.order.stock) == (None, "reserved")  # until released

    stream.decide(on_released(ITEMS), _saga("done"))

    assert stream.types == [
        "order.placed",
        "stock.reserved",
        "payment.declined",
        "order.rejected",
        "stock.released",
    ]
    assert stream.order.stock == "released"


def test_a_declined_answer_after_the_order_moved_on_changes_nothing() -> None:
    reserved = _reserved_stream()
    cancelled = _reserved_stream()
    cancelled.append(NewEvent("order.cancelled", {"by": STAFF}))

    assert on_payment(_declined())(reserved.order, _saga("refunding")) is None
    assert on_payment(_declined())(cancelled.order, _saga("authorizing")) is None
    assert on_payment(_declined())(cancelled.order, _saga("refunding")) is None


@pytest.mark.parametrize(
    ("force", "deadline_in", "expected"),
    [
        (False, 1.0, False),
        (False, None, False),
        (False, 0.0, True),
        (False, -1.0, True),
        (True, 1.0, True),  # the call ran out of time before the row's deadline
    ],
)
def test_a_payment_timeout_rejects_and_voids_the_payment(
    force: bool, deadline_in: float | None, expected: bool
) -> None:
    stream = _reserved_stream()

    change = stream.decide(
        on_payment_timeout(force=force), _saga("authorizing", deadline_in=deadline_in)
    )

    if not expected:
        assert change is None
        assert stream.order.version == 2
        return
    assert change == Change(
        [
            NewEvent("payment.timed_out"),
            NewEvent("order.rejected", {"reason": "payment_timeout"}),
        ],
        [OrderRejected(order_id=ORDER_ID, user_id=USER_ID, reason="payment_timeout")],
        step="refunding",
        outcome="rejected",
    )
    assert (stream.order.status, stream.order.reason, stream.order.payment) == (
        "rejected",
        "payment_timeout",
        "timed_out",
    )


def test_a_payment_timeout_at_another_step_or_status_changes_nothing() -> None:
    reserving = Stream().order
    cancelled = _reserved_stream()
    cancelled.append(NewEvent("order.cancelled", {"by": STAFF}))

    assert on_payment_timeout(force=True)(reserving, _saga("reserving", deadline_in=-1)) is None
    assert on_payment_timeout(force=True)(cancelled.order, _saga("authorizing")) is None
    assert on_payment_timeout(force=True)(cancelled.order, _saga("refunding")) is None


def test_a_timed_out_payment_that_took_nothing_ends_without_a_refund() -> None:
    stream = _reserved_stream()
    stream.decide(on_payment_timeout(force=True), _saga("authorizing"))

    change = stream.decide(on_refund(None), _saga("refunding"))

    assert change == Change([], step="done")
    assert change is not None
    assert change.outcome is None
    assert stream.order.payment == "timed_out"
    assert stream.types[-2:] == ["payment.timed_out", "order.rejected"]


def test_a_timed_out_payment_that_was_taken_is_refunded() -> None:
    stream = _reserved_stream()
    stream.decide(on_payment_timeout(force=True), _saga("authorizing"))

    change = stream.decide(
        on_refund(RefundResult(PAYMENT_ID, TOTAL, first=True)), _saga("refunding")
    )

    assert change == Change(
        [NewEvent("payment.refunded", {"payment_id": str(PAYMENT_ID), "amount_cents": TOTAL})],
        [
            PaymentRefunded(
                order_id=ORDER_ID, payment_id=PAYMENT_ID, amount_cents=TOTAL, currency="EUR"
            )
        ],
        step="done",
        outcome="refunded",
    )
    assert (stream.order.status, stream.order.payment) == ("rejected", "refunded")


def test_an_authorization_after_the_timeout_is_recorded_then_refunded_once() -> None:
    stream = _reserved_stream()
    stream.decide(on_payment_timeout(force=True), _saga("authorizing"))

    late = stream.decide(on_payment(_authorized()), _saga("refunding"))

    assert late == Change(
        [NewEvent("payment.authorized", {"payment_id": str(PAYMENT_ID), "amount_cents": TOTAL})],
        [
            PaymentAuthorized(
                order_id=ORDER_ID, payment_id=PAYMENT_ID, amount_cents=TOTAL, currency="EUR"
            )
        ],
        step="refunding",
    )
    assert (stream.order.status, stream.order.payment, stream.order.payment_id) == (
        "rejected",
        "authorized",
        PAYMENT_ID,
    )
    assert on_payment(_authorized())(stream.order, _saga("refunding")) is None  # a duplicate

    refunded = stream.decide(
        on_refund(RefundResult(PAYMENT_ID, TOTAL, first=True)), _saga("refunding")
    )

    assert refunded is not None
    assert refunded.outcome == "refunded"
    assert stream.order.payment == "refunded"
    # A second refund run (after a crash) only ends the saga; a later answer changes nothing.
    assert on_refund(RefundResult(PAYMENT_ID, TOTAL, first=False))(
        stream.order, _saga("refunding")
    ) == Change([], step="done")
    assert on_payment(_authorized())(stream.order, _saga("done")) is None
    assert stream.types == [
        "order.placed",
        "stock.reserved",
        "payment.timed_out",
        "order.rejected",
        "payment.authorized",
        "payment.refunded",
    ]


def test_a_refund_outside_the_refunding_step_changes_nothing() -> None:
    order = _confirmed_stream().order
    result = RefundResult(PAYMENT_ID, TOTAL, first=True)

    for step in ("reserving", "authorizing", "done"):
        assert on_refund(result)(order, _saga(step)) is None
        assert on_refund(None)(order, _saga(step)) is None


# cancellation ------------------------------------------------------------------------------------


def test_a_cancellation_while_reserving_leaves_the_late_answers_without_effect() -> None:
    stream = Stream()
    stream.order.ensure_cancellable()
    stream.append(NewEvent("order.cancelled", {"by": STAFF, "reason": "cancelled"}))

    saga = _saga("done", deadline_in=-1)
    assert on_reserved(_reserved(), PAYMENT_TIMEOUT)(stream.order, saga) is None
    assert on_reservation_timeout(stream.order, _saga("reserving", deadline_in=-1)) is None
    change = stream.decide(on_released(ITEMS), saga)  # the release of what came in late

    assert change is not None
    assert (stream.order.status, stream.order.stock) == ("cancelled", "released")


def test_an_authorization_that_arrives_after_a_cancellation_is_refunded() -> None:
    stream = _reserved_stream()
    stream.order.ensure_cancellable()
    stream.append(NewEvent("order.cancelled", {"by": STAFF, "reason": "cancelled"}))

    late = stream.decide(on_payment(_authorized()), _saga("refunding"))

    assert late is not None
    assert (late.step, late.outcome) == ("refunding", None)
    assert [event.type for event in late.events] == ["payment.authorized"]
    assert stream.order.status == "cancelled"  # never confirmed
    refund = stream.decide(
        on_refund(RefundResult(PAYMENT_ID, TOTAL, first=True)), _saga("refunding")
    )
    assert refund is not None
    assert (refund.step, refund.outcome) == ("done", "refunded")
    assert (stream.order.status, stream.order.payment) == ("cancelled", "refunded")


def test_a_confirmed_order_cancelled_is_refunded_then_cannot_ship() -> None:
    stream = _confirmed_stream()
    stream.order.ensure_cancellable()
    stream.append(NewEvent("order.cancelled", {"by": STAFF, "reason": "cancelled"}))

    change = stream.decide(
        on_refund(RefundResult(PAYMENT_ID, TOTAL, first=True)), _saga("refunding")
    )

    assert change is not None
    assert change.publish == [
        PaymentRefunded(
            order_id=ORDER_ID, payment_id=PAYMENT_ID, amount_cents=TOTAL, currency="EUR"
        )
    ]
    assert (stream.order.status, stream.order.payment, stream.order.stock) == (
        "cancelled",
        "refunded",
        "reserved",
    )
    with pytest.raises(OrderStateConflict, match="this one is cancelled"):
        stream.order.ensure_shippable()
    with pytest.raises(OrderStateConflict, match="An order that is cancelled cannot be cancelled"):
        stream.order.ensure_cancellable()

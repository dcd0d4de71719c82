"""The event-sourced order: replay, optimistic concurrency on the stream, the projection fold."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.orders.aggregate import Order, OrderStateConflict, StoredEvent
from services.orders.projection import fold

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _placed(order_id: uuid.UUID, seq: int = 1) -> StoredEvent:
    return StoredEvent(
        order_id,
        seq,
        "order.placed",
        {
            "user_id": str(uuid.uuid4()),
            "items": [{"product_id": str(uuid.uuid4()), "quantity": 2, "unit_price_cents": 150}],
            "total_cents": 300,
            "currency": "USD",
            "shipping_address": {"city": "Oslo"},
        },
        NOW,
    )


def test_replay_folds_the_stream_in_order() -> None:
    order_id = uuid.uuid4()
    events = [
        _placed(order_id),
        StoredEvent(order_id, 2, "stock.reserved", {"items": []}, NOW),
        StoredEvent(
            order_id,
            3,
            "payment.authorized",
            {"payment_id": str(uuid.uuid4()), "amount_cents": 300},
            NOW,
        ),
        StoredEvent(order_id, 4, "order.confirmed", {}, NOW),
    ]

    order = Order.replay(order_id, events)

    assert (order.status, order.version, order.stock, order.payment) == (
        "confirmed",
        4,
        "reserved",
        "authorized",
    )
    assert order.total_cents == 300
    order.ensure_shippable()
    with pytest.raises(ValueError, match="after"):
        Order.replay(order_id, [events[0], events[2]])
    rejected = Order.replay(
        order_id, [events[0], StoredEvent(order_id, 2, "order.rejected", {"reason": "x"}, NOW)]
    )
    with pytest.raises(OrderStateConflict):
        rejected.ensure_cancellable()
    view = fold(None, events)
    assert view is not None
    assert (view["status"], view["version"], view["total_cents"]) == ("confirmed", 4, 300)

"""The event-sourced order: replay, optimistic concurrency on the stream, the projection fold."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from core.db import create_pool, transaction
from services.orders.aggregate import NewEvent, Order, OrderStateConflict, StoredEvent
from services.orders.projection import fold
from services.orders.repository import ConcurrentAppend, OrdersRepository

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


async def test_two_writers_of_one_version_conflict(orders_dsn: str) -> None:
    pool = await create_pool(orders_dsn, min_size=1, max_size=2)
    order_id = uuid.uuid4()
    repository = OrdersRepository(pool)
    try:
        async with transaction(pool) as conn:
            await repository.append(
                conn, order_id, 0, [NewEvent("order.placed", _placed(order_id).data)]
            )
        async with transaction(pool) as conn:
            await repository.append(conn, order_id, 1, [NewEvent("stock.reserved", {"items": []})])
        with pytest.raises(ConcurrentAppend):
            async with transaction(pool) as conn:
                await repository.append(
                    conn, order_id, 1, [NewEvent("order.rejected", {"reason": "x"})]
                )
        stream = await repository.load_stream(order_id)
        assert [(e.seq, e.type) for e in stream] == [(1, "order.placed"), (2, "stock.reserved")]
    finally:
        await pool.execute("DELETE FROM order_events WHERE order_id = $1", order_id)
        await pool.close()


async def test_a_stream_is_numbered_from_1(orders_db: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await orders_db.execute(
            "INSERT INTO order_events (order_id, seq, type, data) VALUES ($1, 0, 'x', '{}')",
            uuid.uuid4(),
        )

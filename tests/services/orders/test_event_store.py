"""The event store: optimistic concurrency on an order's stream, in PostgreSQL."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from core.db import create_pool, transaction
from services.orders.aggregate import NewEvent
from services.orders.repository import ConcurrentAppend, OrdersRepository
from tests.services.orders.test_aggregate import _placed


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

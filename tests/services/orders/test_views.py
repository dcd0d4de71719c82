"""Order views: the domain object the service returns, as the read model stores, the cache keeps
and the HTTP layer maps it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from core.cache.serialize import AdapterCodec
from core.db import create_pool
from services.orders.aggregate import NewEvent, OrderLineState
from services.orders.api import order_out
from services.orders.projection import OrderView
from services.orders.repository import ConcurrentAppend, OrdersRepository, StepChange
from services.orders.schemas import OrderOut

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _view() -> OrderView:
    return OrderView(
        id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        status="rejected",
        items=[OrderLineState(uuid.uuid4(), 2, 150)],
        total_cents=300,
        currency="EUR",
        shipping_address={"city": "Oslo"},
        reason="payment_declined",
        created_at=NOW,
        updated_at=NOW,
    )


def test_a_view_maps_to_the_response_body() -> None:
    view = _view()

    body = order_out(view).model_dump(mode="json")

    assert body == {
        "id": str(view.id),
        "user_id": str(view.user_id),
        "status": "rejected",
        "items": [
            {
                "product_id": str(view.items[0].product_id),
                "quantity": 2,
                "unit_price_cents": 150,
            }
        ],
        "total_cents": 300,
        "currency": "EUR",
        "shipping_address": {"city": "Oslo"},
        "reason": "payment_declined",
        "created_at": "2026-12-01T00:00:00Z",
        "updated_at": "2026-12-01T00:00:00Z",
    }


def test_a_cached_view_reads_back_and_so_does_one_cached_as_a_response_body() -> None:
    codec: AdapterCodec[OrderView | None] = AdapterCodec(OrderView | None)
    view = _view()

    assert codec.loads(codec.dumps(view)) == view
    assert codec.loads(codec.dumps(None)) is None
    # What an instance that cached ``OrderOut`` wrote under ``order:{id}``.
    older: AdapterCodec[OrderOut | None] = AdapterCodec(OrderOut | None)
    assert codec.loads(older.dumps(order_out(view))) == view


async def test_the_projection_returns_the_view_it_stores(orders_dsn: str) -> None:
    pool = await create_pool(orders_dsn, min_size=1, max_size=2)
    repository = OrdersRepository(pool)
    order_id, user_id, product_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    placed = NewEvent(
        "order.placed",
        {
            "user_id": str(user_id),
            "items": [{"product_id": str(product_id), "quantity": 3, "unit_price_cents": 250}],
            "total_cents": 750,
            "currency": "USD",
            "shipping_address": {"city": "Oslo"},
        },
    )
    try:
        async with repository.transaction() as conn:
            stored = await repository.append(conn, order_id, 0, [placed])
            view = await repository.project(conn, order_id, stored)
        assert view is not None
        assert (view.id, view.user_id, view.status, view.reason) == (
            order_id,
            user_id,
            "pending",
            None,
        )
        assert view.items == [OrderLineState(product_id, 3, 250)]
        assert await repository.get_view(order_id) == view

        async with repository.transaction() as conn:
            stream = await repository.load_stream(order_id, conn)
            rejected = await repository.append(
                conn, order_id, 1, [NewEvent("order.rejected", {"reason": "out_of_stock"})]
            )
            after = await repository.project(conn, order_id, rejected, before=stream)
        assert after is not None
        assert (after.status, after.reason) == ("rejected", "out_of_stock")
        assert await repository.get_view(order_id) == after
        assert after in await repository.list_views(user_id=user_id, limit=10, after=None)
    finally:
        await pool.execute("DELETE FROM order_views WHERE id = $1", order_id)
        await pool.execute("DELETE FROM order_events WHERE order_id = $1", order_id)
        await pool.close()


async def test_one_statement_appends_projects_and_moves_the_saga(orders_dsn: str) -> None:
    pool = await create_pool(orders_dsn, min_size=1, max_size=2)
    repository = OrdersRepository(pool)
    order_id, user_id = uuid.uuid4(), uuid.uuid4()
    placed = NewEvent(
        "order.placed",
        {
            "user_id": str(user_id),
            "items": [{"product_id": str(uuid.uuid4()), "quantity": 1, "unit_price_cents": 99}],
            "total_cents": 99,
            "currency": "EUR",
            "shipping_address": {"city": "Lyon"},
        },
    )
    reserved = NewEvent("stock.reserved", {"items": []})
    try:
        async with repository.transaction() as conn:
            await repository.create_saga(
                conn, order_id, token="tok_visa", deadline_in=30, correlation_id=None
            )
            stored, view = await repository.append_projected(conn, order_id, 0, [placed], before=[])
        assert view is not None
        assert view.created_at == view.updated_at == stored[0].occurred_at
        assert await repository.get_view(order_id) == view

        async with repository.transaction() as conn:
            stream = await repository.load_stream(order_id, conn)
            step = StepChange("authorizing", deadline_in=10, lease_in=60)
            stored, after = await repository.append_projected(
                conn, order_id, 1, [reserved], before=stream, step=step
            )
        assert [(e.seq, e.type) for e in stored] == [(2, "stock.reserved")]
        assert after is not None
        assert await repository.get_view(order_id) == after
        assert (after.created_at, after.updated_at) == (view.created_at, stored[0].occurred_at)
        saga = await pool.fetchrow(
            "SELECT step, deadline - updated_at AS deadline, lease_until > now() AS leased"
            " FROM order_sagas WHERE order_id = $1",
            order_id,
        )
        assert saga is not None
        assert (saga["step"], saga["deadline"].total_seconds(), saga["leased"]) == (
            "authorizing",
            10,
            True,
        )
        assert await repository.differing_from_replay() == []

        # A writer that read version 1 too: nothing of it is written, the saga stays as it is.
        with pytest.raises(ConcurrentAppend):
            async with repository.transaction() as conn:
                await repository.append_projected(
                    conn, order_id, 1, [reserved], before=stream, step=StepChange("done")
                )
        assert [e.seq for e in await repository.load_stream(order_id)] == [1, 2]
        assert (
            await pool.fetchval("SELECT step FROM order_sagas WHERE order_id = $1", order_id)
            == "authorizing"
        )
    finally:
        await pool.execute("DELETE FROM order_sagas WHERE order_id = $1", order_id)
        await pool.execute("DELETE FROM order_views WHERE id = $1", order_id)
        await pool.execute("DELETE FROM order_events WHERE order_id = $1", order_id)
        await pool.close()

"""``ops.invariants`` against real databases: a consistent shop passes, each planted fault is
found (and named), and a fault that heals within the deadline is not reported."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiormq
import asyncpg
import pytest

import migrations
from core.bus.amqp.common import REASON, parking_queue_name
from ops.invariants import check_invariants
from services.orders.commands import rebuild_read_model

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass
class Shop:
    """Two migrated databases holding one confirmed order of 2 units of one product."""

    orders_dsn: str
    products_dsn: str
    orders: asyncpg.Connection
    products: asyncpg.Connection
    order_id: uuid.UUID
    product_id: uuid.UUID

    async def names(self, deadline: float = 0.5, **kwargs: Any) -> set[str]:
        """The invariants violated now (those that need time get ``deadline``)."""
        found = await check_invariants(
            self.orders_dsn, self.products_dsn, deadline=deadline, **kwargs
        )
        return {violation.invariant for violation in found}


@pytest.fixture(scope="module")
def dsns(throwaway_database: Callable[[str, Any], str]) -> tuple[str, str]:
    """An orders and a products database of this module."""
    return (
        throwaway_database("ops_orders", migrations.location("orders")),
        throwaway_database("ops_products", migrations.location("products")),
    )


async def _event(
    conn: asyncpg.Connection, order_id: uuid.UUID, seq: int, kind: str, data: dict[str, Any]
) -> None:
    await conn.execute(
        "INSERT INTO order_events (order_id, seq, type, data) VALUES ($1, $2, $3, $4::jsonb)",
        order_id,
        seq,
        kind,
        json.dumps(data),
    )


@pytest.fixture
async def shop(dsns: tuple[str, str]) -> AsyncIterator[Shop]:
    """The databases emptied and seeded with a consistent confirmed order."""
    orders_dsn, products_dsn = dsns
    orders = await asyncpg.connect(orders_dsn)
    products = await asyncpg.connect(products_dsn)
    order_id, product_id, payment_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await orders.execute("TRUNCATE order_events, order_sagas, order_views, payments, outbox, inbox")
    await products.execute(
        "TRUNCATE reservation_lines, reservations, inventory, products CASCADE;"
        " TRUNCATE outbox, inbox"
    )
    await products.execute(
        "INSERT INTO products (id, sku, name, price_cents) VALUES ($1, $2, 'Kettle', 1500)",
        product_id,
        f"sku-{product_id.hex[:8]}",
    )
    await products.execute(
        "INSERT INTO inventory (product_id, on_hand, reserved) VALUES ($1, 10, 2)", product_id
    )
    await products.execute(
        "INSERT INTO reservations (order_id, status) VALUES ($1, 'reserved')", order_id
    )
    await products.execute(
        "INSERT INTO reservation_lines (order_id, product_id, quantity) VALUES ($1, $2, 2)",
        order_id,
        product_id,
    )
    items = [{"product_id": str(product_id), "quantity": 2, "unit_price_cents": 1500}]
    placed = {
        "user_id": str(uuid.uuid4()),
        "items": items,
        "total_cents": 3000,
        "currency": "USD",
        "shipping_address": {},
    }
    authorized = {"payment_id": str(payment_id), "amount_cents": 3000}
    for seq, (kind, data) in enumerate(
        [
            ("order.placed", placed),
            ("stock.reserved", {"items": items}),
            ("payment.authorized", authorized),
            ("order.confirmed", {}),
        ],
        start=1,
    ):
        await _event(orders, order_id, seq, kind, data)
    await orders.execute(
        "INSERT INTO order_sagas (order_id, step, payment_token) VALUES ($1, 'done', 'tok')",
        order_id,
    )
    await orders.execute(
        "INSERT INTO payments (order_id, payment_id, status, amount_cents, currency,"
        " authorizations) VALUES ($1, $2, 'authorized', 3000, 'USD', 1)",
        order_id,
        payment_id,
    )
    await rebuild_read_model(orders_dsn)
    try:
        yield Shop(orders_dsn, products_dsn, orders, products, order_id, product_id)
    finally:
        await orders.close()
        await products.close()


async def test_a_consistent_shop_has_no_violation(shop: Shop) -> None:
    assert await check_invariants(shop.orders_dsn, shop.products_dsn, deadline=1) == []


async def test_reserved_stock_that_no_reservation_holds_is_found(shop: Shop) -> None:
    await shop.products.execute("UPDATE inventory SET reserved = reserved + 1")
    found = await check_invariants(shop.orders_dsn, shop.products_dsn, deadline=0.5)
    assert [v.invariant for v in found] == ["stock-reserved"]
    assert str(shop.product_id) in found[0].detail
    assert "reserved 3, reservations hold 2" in found[0].detail


async def test_a_confirmed_order_whose_stock_was_released_is_found(shop: Shop) -> None:
    await shop.products.execute("UPDATE reservations SET status = 'released'")
    await shop.products.execute("UPDATE inventory SET reserved = 0")
    assert await shop.names() == {"stock-matches-orders"}


async def test_stock_held_for_an_unknown_order_is_found(shop: Shop) -> None:
    stray = uuid.uuid4()
    await shop.products.execute(
        "INSERT INTO reservations (order_id, status) VALUES ($1, 'reserved')", stray
    )
    found = await check_invariants(shop.orders_dsn, shop.products_dsn, deadline=0.5)
    assert [v.invariant for v in found] == ["stock-matches-orders"]
    assert str(stray) in found[0].detail


async def test_an_order_stuck_pending_is_found_after_the_deadline(shop: Shop) -> None:
    await shop.orders.execute("UPDATE order_sagas SET step = 'authorizing'")
    found = await check_invariants(shop.orders_dsn, shop.products_dsn, deadline=1)
    assert [v.invariant for v in found] == ["order-final-status"]
    assert "saga authorizing" in found[0].detail


async def test_an_order_that_settles_within_the_deadline_is_no_violation(shop: Shop) -> None:
    await shop.orders.execute("UPDATE order_sagas SET step = 'refunding'")

    async def settle() -> None:
        # The saga finishes while the check waits (it polls: the first look sees it refunding).
        async with asyncio.timeout(10):
            while True:
                await asyncio.sleep(0.2)
                if await shop.orders.fetchval("SELECT step FROM order_sagas") == "refunding":
                    await shop.orders.execute("UPDATE order_sagas SET step = 'done'")
                    return

    check = asyncio.ensure_future(check_invariants(shop.orders_dsn, shop.products_dsn, deadline=15))
    await settle()
    assert await check == []


async def test_a_second_authorization_is_found(shop: Shop) -> None:
    await _event(
        shop.orders,
        shop.order_id,
        5,
        "payment.authorized",
        {"payment_id": str(uuid.uuid4()), "amount_cents": 3000},
    )
    await rebuild_read_model(shop.orders_dsn)
    found = await check_invariants(shop.orders_dsn, shop.products_dsn, deadline=0.5)
    assert [v.invariant for v in found] == ["payment-single-authorization"]
    assert "2 payment.authorized events" in found[0].detail


async def test_money_kept_for_a_rejected_order_is_found(shop: Shop) -> None:
    await _event(shop.orders, shop.order_id, 5, "order.cancelled", {"by": str(uuid.uuid4())})
    await rebuild_read_model(shop.orders_dsn)
    await shop.products.execute("UPDATE reservations SET status = 'released'")
    await shop.products.execute("UPDATE inventory SET reserved = 0")
    assert await shop.names() == {"payment-settled"}


async def test_a_view_that_missed_an_event_is_found(shop: Shop) -> None:
    await shop.orders.execute("UPDATE order_views SET status = 'pending', version = 3")
    found = await check_invariants(shop.orders_dsn, shop.products_dsn, deadline=0.5)
    assert "read-model" in {v.invariant for v in found}


async def test_an_unpublished_outbox_row_is_found(shop: Shop) -> None:
    await shop.products.execute(
        "INSERT INTO outbox (id, routing_key, envelope, attempts, last_error)"
        " VALUES ($1, 'inventory.reserved', '{}', 3, 'broker down')",
        uuid.uuid4(),
    )
    found = await check_invariants(shop.orders_dsn, shop.products_dsn, deadline=0.5)
    assert [v.invariant for v in found] == ["outbox-drained"]
    assert "inventory.reserved unpublished after 3 attempt(s) (broker down)" in found[0].detail


async def test_a_parked_message_is_found_and_explained(shop: Shop) -> None:
    queue = f"test-ops-{uuid.uuid4().hex[:8]}"
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        await channel.queue_declare(parking_queue_name(queue), durable=False, auto_delete=False)
        assert await shop.names(amqp_url=AMQP_URL, parking_queues=[queue]) == set()
        await channel.basic_publish(
            b"{}",
            routing_key=parking_queue_name(queue),
            properties=aiormq.spec.Basic.Properties(
                message_id="m-1", headers={REASON: "handler failed: boom"}
            ),
        )
        found = await check_invariants(
            shop.orders_dsn,
            shop.products_dsn,
            deadline=0.5,
            amqp_url=AMQP_URL,
            parking_queues=[queue],
        )
        assert [v.invariant for v in found] == ["parking-empty"]
        assert "m-1" in found[0].detail
        assert "handler failed: boom" in found[0].detail
        # Reading it left it parked.
        declared = await channel.queue_declare(parking_queue_name(queue), passive=True)
        assert declared.message_count == 1
    finally:
        await channel.queue_delete(parking_queue_name(queue))
        await connection.close()

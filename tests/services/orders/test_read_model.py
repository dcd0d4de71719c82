"""The read model (CQRS): rebuilt from the streams, it equals the live one; business metrics."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from core.db import create_pool
from core.testing import wait_for
from services.orders.aggregate import NewEvent
from services.orders.commands import add_commands, check_read_model, rebuild_read_model
from services.orders.repository import OrdersRepository
from tests.services.orders.helpers import Shop, order_path

VIEW = "SELECT * FROM order_views ORDER BY id"


async def _views(db: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetch(VIEW)]


async def _orders_of_every_kind(shop: Shop) -> list[str]:
    mug = await shop.product(stock=6)
    confirmed = await shop.place([(mug["id"], 1)])
    shipped = await shop.place([(mug["id"], 2)])
    cancelled = await shop.place([(mug["id"], 1)])
    declined = await shop.place([(mug["id"], 1)], token="tok_decline")
    short = await shop.place([(mug["id"], 50)])
    ids = [o["id"] for o in (confirmed, shipped, cancelled, declined, short)]
    for order_id in ids:
        await shop.outcome(order_id)
    resp = await shop.orders.post(order_path(shipped["id"], "ship"), headers=shop.admin.headers)
    assert resp.status == 200
    resp = await shop.orders.post(
        order_path(cancelled["id"], "cancel"), headers=shop.customer.headers
    )
    assert resp.status == 202
    for order_id in ids:
        await shop.settled(order_id)
    return ids


async def test_the_rebuilt_read_model_equals_the_live_one(shop: Shop, orders_dsn: str) -> None:
    ids = await _orders_of_every_kind(shop)
    live = await _views(shop.orders_db)
    statuses = {str(v["id"]): v["status"] for v in live if str(v["id"]) in ids}
    assert sorted(statuses.values()) == [
        "cancelled",
        "confirmed",
        "rejected",
        "rejected",
        "shipped",
    ]

    assert await check_read_model(orders_dsn) == []
    count = await rebuild_read_model(orders_dsn)

    assert count == len(live)
    assert await _views(shop.orders_db) == live


async def test_a_drifted_read_model_is_detected_and_repaired(shop: Shop, orders_dsn: str) -> None:
    mug = await shop.product(stock=2)
    placed = await shop.place([(mug["id"], 1)])
    await shop.outcome(placed["id"])
    live = await _views(shop.orders_db)
    await shop.orders_db.execute(
        "UPDATE order_views SET status = 'shipped' WHERE id = $1", uuid.UUID(placed["id"])
    )
    await shop.orders_db.execute("DELETE FROM order_views WHERE id <> $1", uuid.UUID(placed["id"]))

    differing = await check_read_model(orders_dsn)

    assert placed["id"] in differing
    assert len(differing) == len(live)
    await rebuild_read_model(orders_dsn)
    assert await _views(shop.orders_db) == live
    assert (await shop.get(placed["id"]))["status"] == "confirmed"


def test_the_command_group_rebuilds(orders_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="aioshop")
    add_commands(parser.add_subparsers(dest="command", required=True))

    args = parser.parse_args(["orders", "--database-url", orders_dsn, "rebuild-read-model"])
    assert args.func(args) == 0
    assert "rebuilt the read model of" in capsys.readouterr().out
    args = parser.parse_args(["orders", "--database-url", orders_dsn, "check-read-model"])
    assert args.func(args) == 0
    args = parser.parse_args(["orders", "--database-url", orders_dsn, "sagas"])
    assert args.func(args) == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["orders"])


async def test_business_metrics(shop: Shop) -> None:
    mug = await shop.product(price_cents=500, stock=3)
    confirmed = await shop.place([(mug["id"], 2)])
    rejected = await shop.place([(mug["id"], 1)], token="tok_decline")
    await shop.outcome(confirmed["id"])
    await shop.outcome(rejected["id"])
    await shop.orders.post(order_path(confirmed["id"], "cancel"), headers=shop.customer.headers)
    await shop.settled(confirmed["id"])

    text = await (await shop.orders.get("/metrics")).text()

    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("orders_")
    }
    assert samples["orders_placed_total"] == 2
    assert samples["orders_confirmed_total"] == 1
    assert samples['orders_rejected_total{reason="payment_declined"}'] == 1
    assert samples['orders_cancelled_total{from_status="confirmed"}'] == 1
    assert samples['orders_revenue_cents_total{currency="USD"}'] == 1000
    assert samples['orders_refunded_cents_total{currency="USD"}'] == 1000
    assert samples['orders_saga_duration_seconds_count{outcome="confirmed"}'] == 1
    assert samples['orders_saga_duration_seconds_count{outcome="rejected"}'] == 1


async def test_an_order_projected_while_the_check_runs_is_no_difference(orders_dsn: str) -> None:
    """The check compares a copy of the live views with a replay: an order committed between
    the copy and the replay must be in both (the chaos suite saw it reported once)."""
    pool = await create_pool(orders_dsn, min_size=1, max_size=3)
    repository = OrdersRepository(pool)
    order_id = uuid.uuid4()
    placed = NewEvent(
        "order.placed",
        {
            "user_id": str(uuid.uuid4()),
            "items": [{"product_id": str(uuid.uuid4()), "quantity": 1, "unit_price_cents": 99}],
            "total_cents": 99,
            "currency": "EUR",
            "shipping_address": {"city": "Lyon"},
        },
    )
    try:
        async with pool.acquire() as writer:
            tx = writer.transaction()
            await tx.start()
            await repository.append_projected(writer, order_id, 0, [placed], before=[])
            check = asyncio.create_task(repository.differing_from_replay())

            async def check_waits_for_the_writer() -> bool:
                return bool(
                    await pool.fetchval(
                        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                        " WHERE NOT l.granted AND c.relname = 'order_views'"
                    )
                )

            await wait_for(check_waits_for_the_writer, within=10)
            await tx.commit()
            assert order_id not in await asyncio.wait_for(check, 30)
    finally:
        await pool.execute("DELETE FROM order_views WHERE id = $1", order_id)
        await pool.execute("DELETE FROM order_events WHERE order_id = $1", order_id)
        await pool.close()

"""Many orders at once against limited stock; a cancellation racing the saga."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from core.testing import wait_for
from tests.services.orders.helpers import FINAL, ORDERS, Shop, order_body, order_path


async def test_100_concurrent_orders_never_confirm_more_than_the_stock(shop: Shop) -> None:
    mug = await shop.product(stock=40)
    pot = await shop.product(stock=25)
    lines = [[(mug["id"], 1 + i % 3)] + ([(pot["id"], 1)] if i % 2 else []) for i in range(100)]

    async def place(i: int) -> str:
        resp = await shop.orders.post(
            ORDERS, json=order_body(lines[i]), headers=shop.customer.headers
        )
        assert resp.status == 202, await resp.text()
        order_id: str = (await resp.json())["id"]
        return order_id

    ids = await asyncio.gather(*(place(i) for i in range(100)))

    async def all_final() -> list[dict[str, Any]]:
        rows = await shop.orders_db.fetch(
            "SELECT id, status FROM order_views WHERE id = ANY($1::uuid[])",
            [uuid.UUID(i) for i in ids],
        )
        return [dict(r) for r in rows] if all(r["status"] in FINAL for r in rows) else []

    final = await wait_for(all_final, within=60, interval=0.1)
    status = {str(r["id"]): r["status"] for r in final}
    confirmed = [i for i, order_id in enumerate(ids) if status[order_id] == "confirmed"]
    rejected = [i for i, order_id in enumerate(ids) if status[order_id] == "rejected"]
    assert len(confirmed) + len(rejected) == 100
    assert confirmed
    assert rejected
    wanted_mug = sum(qty for i in confirmed for pid, qty in lines[i] if pid == mug["id"])
    wanted_pot = sum(qty for i in confirmed for pid, qty in lines[i] if pid == pot["id"])
    assert wanted_mug <= 40
    assert wanted_pot <= 25
    assert await shop.inventory(mug["id"]) == {
        "on_hand": 40,
        "reserved": wanted_mug,
        "available": 40 - wanted_mug,
    }
    assert (await shop.inventory(pot["id"]))["reserved"] == wanted_pot
    reasons = await shop.orders_db.fetch(
        "SELECT DISTINCT reason FROM order_views WHERE id = ANY($1::uuid[]) AND reason IS NOT NULL",
        [uuid.UUID(i) for i in ids],
    )
    assert {r["reason"] for r in reasons} == {"out_of_stock"}


async def test_cancel_racing_the_payment_ends_cancelled_with_nothing_held(shop: Shop) -> None:
    mug = await shop.product(stock=30)
    placed = [await shop.place([(mug["id"], 1)]) for _ in range(10)]

    async def cancel(order_id: str) -> int:
        resp = await shop.orders.post(order_path(order_id, "cancel"), headers=shop.customer.headers)
        return resp.status

    statuses = await asyncio.gather(*(cancel(o["id"]) for o in placed))

    assert set(statuses) == {202}
    for order in placed:
        await shop.settled(order["id"])
        assert (await shop.get(order["id"]))["status"] == "cancelled"
        authorized = await shop.published("payment.authorized", order["id"])
        refunded = await shop.published("payment.refunded", order["id"])
        assert len(authorized) <= 1
        assert len(refunded) == len(authorized)  # whatever was charged came back

    async def released() -> bool:
        return await shop.inventory(mug["id"]) == {"on_hand": 30, "reserved": 0, "available": 30}

    await wait_for(released, within=10)
    payments = await shop.orders_db.fetch(
        "SELECT status FROM payments WHERE order_id = ANY($1::uuid[])",
        [uuid.UUID(o["id"]) for o in placed],
    )
    assert all(p["status"] == "refunded" for p in payments)

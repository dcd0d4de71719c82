"""Placing, reading, cancelling and shipping orders, and the saga's outcomes (in-memory bus)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from redis.asyncio import Redis

from core.snapshot import SNAPSHOT
from core.testing import assert_problem, wait_for
from services.orders import Settings
from tests.services.orders.conftest import Services
from tests.services.orders.helpers import ORDERS, Shop, order_body, order_path


async def test_tok_visa_confirms_and_keeps_the_stock_reserved(shop: Shop) -> None:
    mug = await shop.product(price_cents=1250, stock=5)
    pot = await shop.product(price_cents=300, stock=4)

    placed = await shop.place([(mug["id"], 2), (pot["id"], 1)])

    assert placed["status"] == "pending"
    assert placed["user_id"] == shop.customer.id
    assert placed["total_cents"] == 2 * 1250 + 300
    assert {(i["product_id"], i["quantity"], i["unit_price_cents"]) for i in placed["items"]} == {
        (mug["id"], 2, 1250),
        (pot["id"], 1, 300),
    }
    order = await shop.outcome(placed["id"])
    assert order["status"] == "confirmed"
    assert order["reason"] is None
    assert await shop.inventory(mug["id"]) == {"on_hand": 5, "reserved": 2, "available": 3}
    assert await shop.history(placed["id"]) == [
        "order.placed",
        "stock.reserved",
        "payment.authorized",
        "order.confirmed",
    ]
    (authorized,) = await shop.published("payment.authorized", placed["id"])
    assert authorized["amount_cents"] == 2800
    assert len(await shop.published("order.confirmed", placed["id"])) == 1


async def test_prices_come_from_the_catalog_not_the_client(shop: Shop) -> None:
    mug = await shop.product(price_cents=999, stock=5)
    body = order_body([(mug["id"], 1)])
    body["items"][0]["unit_price_cents"] = 1

    resp = await shop.orders.post(ORDERS, json=body, headers=shop.customer.headers)

    problem = await assert_problem(resp, 422)
    assert problem["errors"][0]["loc"] == ["body", "items", 0, "unit_price_cents"]
    placed = await shop.place([(mug["id"], 1)])
    assert placed["items"][0]["unit_price_cents"] == 999


async def test_tok_decline_is_rejected_and_the_stock_comes_back(shop: Shop) -> None:
    mug = await shop.product(stock=3)

    placed = await shop.place([(mug["id"], 2)], token="tok_decline")

    order = await shop.outcome(placed["id"])
    assert (order["status"], order["reason"]) == ("rejected", "payment_declined")

    async def released() -> bool:
        return await shop.inventory(mug["id"]) == {"on_hand": 3, "reserved": 0, "available": 3}

    await wait_for(released, within=5)
    assert len(await shop.published("payment.declined", placed["id"])) == 1
    assert await shop.published("payment.authorized", placed["id"]) == []
    await wait_for(lambda: _has(shop, placed["id"], "stock.released"), within=5)


async def _has(shop: Shop, order_id: str, event_type: str) -> bool:
    return event_type in await shop.history(order_id)


async def test_tok_timeout_is_rejected_after_the_deadline_and_the_stock_comes_back(
    shop: Shop,
) -> None:
    mug = await shop.product(stock=3)

    placed = await shop.place([(mug["id"], 3)], token="tok_timeout")

    order = await shop.outcome(placed["id"], within=10)
    assert (order["status"], order["reason"]) == ("rejected", "payment_timeout")
    events = await shop.history(placed["id"])
    assert events[:4] == ["order.placed", "stock.reserved", "payment.timed_out", "order.rejected"]

    async def released() -> bool:
        return await shop.inventory(mug["id"]) == {"on_hand": 3, "reserved": 0, "available": 3}

    await wait_for(released, within=5)
    await shop.settled(placed["id"])
    assert await shop.published("payment.authorized", placed["id"]) == []


async def test_out_of_stock_is_rejected_and_nothing_is_reserved(shop: Shop) -> None:
    mug = await shop.product(stock=1)
    pot = await shop.product(stock=10)

    placed = await shop.place([(pot["id"], 2), (mug["id"], 2)])

    order = await shop.outcome(placed["id"])
    assert (order["status"], order["reason"]) == ("rejected", "out_of_stock")
    assert await shop.inventory(pot["id"]) == {"on_hand": 10, "reserved": 0, "available": 10}
    assert await shop.history(placed["id"]) == [
        "order.placed",
        "stock.reservation_failed",
        "order.rejected",
    ]
    assert await shop.published("payment.authorized", placed["id"]) == []


async def test_unknown_product_is_422_at_placement(shop: Shop) -> None:
    mug = await shop.product(stock=1)
    ghost = str(uuid.uuid4())
    before = await shop.orders_db.fetchval("SELECT count(*) FROM order_events")

    resp = await shop.orders.post(
        ORDERS, json=order_body([(mug["id"], 1), (ghost, 1)]), headers=shop.customer.headers
    )

    problem = await assert_problem(resp, 422)
    assert problem["errors"] == [
        {
            "loc": ["body", "items", 1, "product_id"],
            "msg": "No such product",
            "type": "unknown_product",
        }
    ]
    assert await shop.orders_db.fetchval("SELECT count(*) FROM order_events") == before


async def test_a_product_gone_before_reservation_is_rejected_unknown_product(shop: Shop) -> None:
    # The catalog still serves the product (from its cache) while its row is already gone, as
    # when a product is deleted between placement and reservation.
    mug = await shop.product(stock=2)
    assert (await shop.products.get(f"/api/v1/products/{mug['id']}")).status == 200  # cached
    await shop.products_db.execute("DELETE FROM products WHERE id = $1", uuid.UUID(mug["id"]))

    placed = await shop.place([(mug["id"], 1)])

    order = await shop.outcome(placed["id"])
    assert (order["status"], order["reason"]) == ("rejected", "unknown_product")


async def test_cancel_after_confirm_releases_stock_and_refunds(shop: Shop) -> None:
    mug = await shop.product(stock=4)
    placed = await shop.place([(mug["id"], 3)])
    assert (await shop.outcome(placed["id"]))["status"] == "confirmed"

    resp = await shop.orders.post(order_path(placed["id"], "cancel"), headers=shop.customer.headers)

    assert resp.status == 202, await resp.text()
    assert (await resp.json())["status"] == "cancelled"

    async def released() -> bool:
        return await shop.inventory(mug["id"]) == {"on_hand": 4, "reserved": 0, "available": 4}

    await wait_for(released, within=5)
    await shop.settled(placed["id"])
    (refund,) = await shop.published("payment.refunded", placed["id"])
    assert refund["amount_cents"] == placed["total_cents"]
    assert (await shop.get(placed["id"]))["status"] == "cancelled"
    history = await shop.history(placed["id"])
    assert history[4:] == ["order.cancelled", "payment.refunded", "stock.released"] or history[
        4:
    ] == ["order.cancelled", "stock.released", "payment.refunded"]
    # cancelling again changes nothing; a cancelled order does not ship
    again = await shop.orders.post(
        order_path(placed["id"], "cancel"), headers=shop.customer.headers
    )
    assert again.status == 202
    ship = await shop.orders.post(order_path(placed["id"], "ship"), headers=shop.admin.headers)
    await assert_problem(ship, 409)


async def test_cancel_while_pending_releases_the_stock(shop: Shop) -> None:
    mug = await shop.product(stock=2)
    placed = await shop.place([(mug["id"], 2)], token="tok_timeout")

    async def reserved() -> bool:
        return bool((await shop.inventory(mug["id"]))["reserved"] == 2)

    await wait_for(reserved, within=5)
    resp = await shop.orders.post(order_path(placed["id"], "cancel"), headers=shop.customer.headers)
    assert resp.status == 202

    async def released() -> bool:
        return await shop.inventory(mug["id"]) == {"on_hand": 2, "reserved": 0, "available": 2}

    await wait_for(released, within=5)
    await shop.settled(placed["id"])
    order = await shop.get(placed["id"])
    assert (order["status"], order["reason"]) == ("cancelled", "cancelled")
    assert await shop.published("payment.authorized", placed["id"]) == []


async def test_admin_ships_a_confirmed_order_and_the_stock_leaves(shop: Shop) -> None:
    mug = await shop.product(stock=5)
    placed = await shop.place([(mug["id"], 2)])
    assert (await shop.outcome(placed["id"]))["status"] == "confirmed"

    customer = await shop.orders.post(
        order_path(placed["id"], "ship"), headers=shop.customer.headers
    )
    await assert_problem(customer, 403)
    resp = await shop.orders.post(order_path(placed["id"], "ship"), headers=shop.admin.headers)

    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "shipped"

    async def committed() -> bool:
        return await shop.inventory(mug["id"]) == {"on_hand": 3, "reserved": 0, "available": 3}

    await wait_for(committed, within=5)
    cancel = await shop.orders.post(
        order_path(placed["id"], "cancel"), headers=shop.customer.headers
    )
    await assert_problem(cancel, 409)


async def test_only_a_confirmed_order_ships(shop: Shop) -> None:
    mug = await shop.product(stock=1)
    placed = await shop.place([(mug["id"], 5)])
    assert (await shop.outcome(placed["id"]))["status"] == "rejected"

    resp = await shop.orders.post(order_path(placed["id"], "ship"), headers=shop.admin.headers)

    await assert_problem(resp, 409)


async def test_someone_elses_order_is_404_but_an_admin_sees_it(shop: Shop) -> None:
    mug = await shop.product(stock=2)
    placed = await shop.place([(mug["id"], 1)])

    for path in (order_path(placed["id"]), order_path(placed["id"], "events")):
        await assert_problem(await shop.orders.get(path, headers=shop.other.headers), 404)
        assert (await shop.orders.get(path, headers=shop.admin.headers)).status == 200
    cancel = await shop.orders.post(order_path(placed["id"], "cancel"), headers=shop.other.headers)
    await assert_problem(cancel, 404)
    await assert_problem(
        await shop.orders.get(order_path(uuid.uuid4()), headers=shop.customer.headers), 404
    )
    await assert_problem(await shop.orders.get(order_path(placed["id"])), 401)


async def test_list_shows_own_orders_newest_first_and_paginates(shop: Shop) -> None:
    mug = await shop.product(stock=50)
    mine = [(await shop.place([(mug["id"], 1)]))["id"] for _ in range(3)]
    theirs = await shop.place([(mug["id"], 1)], user=shop.other)

    resp = await shop.orders.get(ORDERS, params={"limit": 2}, headers=shop.customer.headers)
    first = await resp.json()
    resp = await shop.orders.get(
        ORDERS, params={"limit": 2, "cursor": first["next_cursor"]}, headers=shop.customer.headers
    )
    second = await resp.json()

    assert [o["id"] for o in first["items"] + second["items"]] == mine[::-1]
    assert second["next_cursor"] is None
    resp = await shop.orders.get(
        ORDERS, params={"user_id": shop.other.id}, headers=shop.admin.headers
    )
    assert [o["id"] for o in (await resp.json())["items"]] == [theirs["id"]]
    resp = await shop.orders.get(
        ORDERS, params={"user_id": shop.other.id}, headers=shop.customer.headers
    )
    assert [o["id"] for o in (await resp.json())["items"]] == mine[::-1][:20]
    bad = await shop.orders.get(ORDERS, params={"cursor": "nope"}, headers=shop.customer.headers)
    await assert_problem(bad, 422)


async def test_lines_are_validated(shop: Shop) -> None:
    mug = await shop.product(stock=5)
    cases = [
        order_body([(mug["id"], 0)]),
        order_body([(mug["id"], 1001)]),
        order_body([]),
        order_body([(str(uuid.uuid4()), 1) for _ in range(101)]),
        order_body([(mug["id"], 1), (mug["id"], 2)]),
        {**order_body([(mug["id"], 1)]), "payment": {}},
        {**order_body([(mug["id"], 1)]), "shipping_address": {}},
    ]
    for body in cases:
        resp = await shop.orders.post(ORDERS, json=body, headers=shop.customer.headers)
        await assert_problem(resp, 422)
    assert (await shop.orders.post(ORDERS, json=order_body([(mug["id"], 1)]))).status == 401
    assert (
        await shop.orders.post(ORDERS, json=cases[0], headers=shop.customer.headers)
    ).status == 422
    assert await shop.inventory(mug["id"]) == {"on_hand": 5, "reserved": 0, "available": 5}


async def test_same_idempotency_key_places_one_order(shop: Shop) -> None:
    mug = await shop.product(stock=5)
    headers = {**shop.customer.headers, "Idempotency-Key": f"key-{uuid.uuid4().hex}"}
    body = order_body([(mug["id"], 2)])

    first = await shop.orders.post(ORDERS, json=body, headers=headers)
    second = await shop.orders.post(ORDERS, json=body, headers=headers)
    other = await shop.orders.post(ORDERS, json=order_body([(mug["id"], 1)]), headers=headers)

    assert (first.status, second.status) == (202, 202)
    assert await first.read() == await second.read()
    await assert_problem(other, 422)
    order_id = (await first.json())["id"]
    count = await shop.orders_db.fetchval(
        "SELECT count(*) FROM order_events WHERE type = 'order.placed' AND data->>'user_id' = $1",
        shop.customer.id,
    )
    assert count == 1
    assert (await shop.outcome(order_id))["status"] == "confirmed"
    assert (await shop.inventory(mug["id"]))["reserved"] == 2


async def test_an_idempotency_key_holds_when_redis_never_learned_the_response(
    shop: Shop, orders_settings: Settings
) -> None:
    """A crash between the order's commit and Redis recording the response: the retry must
    not place a second order (nor charge twice)."""
    mug = await shop.product(stock=5)
    headers = {**shop.customer.headers, "Idempotency-Key": f"key-{uuid.uuid4().hex}"}
    body = order_body([(mug["id"], 2)])
    first = await shop.orders.post(ORDERS, json=body, headers=headers)
    assert first.status == 202
    order_id = (await first.json())["id"]

    redis = Redis.from_url(orders_settings.redis_url)
    try:
        forgotten = [
            key async for key in redis.scan_iter(match=f"{orders_settings.redis_namespace}:idem:*")
        ]
        assert forgotten  # the key the first request left
        await redis.delete(*forgotten)
    finally:
        await redis.aclose()

    again = await shop.orders.post(ORDERS, json=body, headers=headers)
    assert again.status == 202
    assert (await again.json())["id"] == order_id
    other = await shop.orders.post(ORDERS, json=order_body([(mug["id"], 1)]), headers=headers)
    await assert_problem(other, 422)
    placed = await shop.orders_db.fetchval(
        "SELECT count(*) FROM order_events WHERE type = 'order.placed' AND data->>'user_id' = $1",
        shop.customer.id,
    )
    assert placed == 1
    assert (await shop.outcome(order_id))["status"] == "confirmed"
    assert (await shop.inventory(mug["id"]))["reserved"] == 2


async def test_events_endpoint_shows_the_stream_oldest_first(shop: Shop) -> None:
    mug = await shop.product(price_cents=700, stock=5)
    placed = await shop.place([(mug["id"], 1)])
    await shop.outcome(placed["id"])

    resp = await shop.orders.get(order_path(placed["id"], "events"), headers=shop.customer.headers)

    events = await resp.json()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert set(events[0]) == {"seq", "type", "data", "occurred_at"}
    assert events[0]["type"] == "order.placed"
    assert events[0]["data"]["items"] == [
        {"product_id": mug["id"], "quantity": 1, "unit_price_cents": 700}
    ]
    assert "tok_visa" not in str(events)


async def test_the_dashboard_figures_count_orders_by_status_and_revenue(
    shop: Shop, services: Services, orders_db: asyncpg.Connection
) -> None:
    async def counted() -> dict[str, int]:
        rows = await orders_db.fetch("SELECT status, count(*) FROM order_views GROUP BY status")
        return {row["status"]: row["count"] for row in rows}

    before = await counted()
    revenue_before = await orders_db.fetchval(
        "SELECT coalesce(sum(total_cents), 0) FROM order_views"
        " WHERE status IN ('confirmed', 'shipped') AND currency = 'USD'"
    )
    mug = await shop.product(price_cents=1400, stock=5)
    confirmed = await shop.place([(mug["id"], 2)])
    declined = await shop.place([(mug["id"], 1)], token="tok_decline")
    assert (await shop.outcome(confirmed["id"]))["status"] == "confirmed"
    assert (await shop.outcome(declined["id"]))["status"] == "rejected"

    async def figures() -> dict[str, Any] | None:
        business = (await services.orders.app[SNAPSHOT].take()).business
        by_status = business.get("orders_by_status", {})
        moved = (
            by_status.get("confirmed", 0) == before.get("confirmed", 0) + 1
            and by_status.get("rejected", 0) == before.get("rejected", 0) + 1
        )
        return business if moved else None

    business = await wait_for(figures, within=5)
    assert business["revenue_cents"]["USD"] == revenue_before + 2800

"""The saga's deadlines, duplicated answers and tracing (in-memory bus)."""

from __future__ import annotations

import uuid

import asyncpg
import orjson
import pytest

from core.bus import BUS, Envelope
from core.testing import assert_problem, wait_for
from services.orders import Settings
from services.orders.keys import SAGA_RUNNER
from tests.services.orders.conftest import (
    Services,
    ServicesFactory,
    answer_reserved_again,
    issue,
    new_shop,
)
from tests.services.orders.helpers import ORDERS, Shop, order_body


async def test_no_answer_from_the_stock_step_rejects_after_its_deadline(
    start_services: ServicesFactory,
    orders_settings: Settings,
    products_db: asyncpg.Connection,
    orders_db: asyncpg.Connection,
) -> None:
    services = await start_services(deaf=True, reservation_timeout=0.5)
    shop = new_shop(services, orders_settings, orders_db, products_db)
    try:
        mug = await shop.product(stock=2)

        placed = await shop.place([(mug["id"], 1)])

        order = await shop.outcome(placed["id"], within=5)
        assert (order["status"], order["reason"]) == ("rejected", "reservation_timeout")
        assert await shop.history(placed["id"]) == ["order.placed", "order.rejected"]
        (rejected,) = await shop.published("order.rejected", placed["id"])
        assert rejected["reason"] == "reservation_timeout"
        assert await shop.published("order.cancelled", placed["id"]) == []  # never "cancelled"
        await shop.settled(placed["id"])

        # The products service gets both late, in the order the bus delivers them: it reserves
        # for the placement, then releases for the rejection. No stock stays held.
        envelopes = [
            Envelope.model_validate(orjson.loads(row["envelope"]))
            for row in await orders_db.fetch(
                "SELECT envelope::text AS envelope FROM outbox"
                " WHERE routing_key IN ('order.placed', 'order.rejected')"
                " AND envelope->'data'->>'order_id' = $1 ORDER BY created_at, id",
                placed["id"],
            )
        ]
        assert [e.type for e in envelopes] == ["order.placed", "order.rejected"]
        for item in envelopes:
            await services.products.app[BUS].publish_envelope(item)

        async def both_handled() -> bool:
            handled: int = await products_db.fetchval(
                "SELECT count(*) FROM inbox WHERE event_id = ANY($1::uuid[])",
                [e.id for e in envelopes],
            )
            return handled == 2

        await wait_for(both_handled, within=5)
        assert await shop.inventory(mug["id"]) == {"on_hand": 2, "reserved": 0, "available": 2}
    finally:
        await shop.catalog.cleanup(products_db)


async def test_a_repeated_answer_changes_nothing(shop: Shop, services: Services) -> None:
    mug = await shop.product(stock=5)
    placed = await shop.place([(mug["id"], 2)])
    assert (await shop.outcome(placed["id"]))["status"] == "confirmed"
    await shop.settled(placed["id"])
    before = await shop.history(placed["id"])

    await answer_reserved_again(
        shop, services, placed["id"], mug["id"], 2
    )  # the stock answer, delivered again
    await shop.settled(placed["id"])
    assert await shop.history(placed["id"]) == before
    assert len(await shop.published("payment.authorized", placed["id"])) == 1


async def test_the_request_correlation_id_travels_with_every_event(shop: Shop) -> None:
    mug = await shop.product(stock=5)
    placed = await shop.place([(mug["id"], 1)], headers={"X-Correlation-ID": "corr-order-42"})
    await shop.outcome(placed["id"])
    await shop.settled(placed["id"])

    rows = await shop.orders_db.fetch(
        "SELECT envelope::text AS e FROM outbox WHERE envelope->'data'->>'order_id' = $1",
        placed["id"],
    )
    envelopes = [orjson.loads(r["e"]) for r in rows]
    assert {e["type"] for e in envelopes} == {
        "order.placed",
        "payment.authorized",
        "order.confirmed",
    }
    assert {e["correlation_id"] for e in envelopes} == {"corr-order-42"}
    assert {e["source"] for e in envelopes} == {"orders"}


async def test_orders_service_documents_its_routes_and_events(shop: Shop) -> None:
    spec = await (await shop.orders.get("/openapi.json")).json()
    assert {"/api/v1/orders", "/api/v1/orders/{order_id}/cancel"} <= set(spec["paths"])
    asyncapi = await (await shop.orders.get("/asyncapi.json")).text()
    for event in ("order.placed", "order.confirmed", "payment.refunded", "inventory.reserved"):
        assert event in asyncapi


async def test_placing_without_the_catalog_is_503_and_records_nothing(
    start_services: ServicesFactory,
    orders_settings: Settings,
    orders_db: asyncpg.Connection,
) -> None:
    services = await start_services(products_url="http://127.0.0.1:9", products_timeout=2.0)
    customer = issue(orders_settings, ["customer"])
    before = await orders_db.fetchval("SELECT count(*) FROM order_events")

    resp = await services.orders.post(
        ORDERS, json=order_body([(str(uuid.uuid4()), 1)]), headers=customer.headers
    )

    problem = await assert_problem(resp, 503)
    assert "catalog" in problem["detail"].lower()
    assert await orders_db.fetchval("SELECT count(*) FROM order_events") == before


async def test_the_payment_step_runs_on_the_reservation_not_on_a_poll(
    start_services: ServicesFactory,
    orders_settings: Settings,
    products_db: asyncpg.Connection,
    orders_db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The runner neither polls (once a minute) nor wakes: only the reservation's own commit can
    # start the payment step.
    services = await start_services(saga_poll_interval=60.0, saga_lease=120.0)
    monkeypatch.setattr(services.orders.app[SAGA_RUNNER], "wake", lambda: None)
    shop = new_shop(services, orders_settings, orders_db, products_db)
    try:
        mug = await shop.product(stock=5)

        placed = await shop.place([(mug["id"], 2)])

        assert (await shop.outcome(placed["id"], within=5))["status"] == "confirmed"
        await shop.settled(placed["id"], within=5)
        saga = await orders_db.fetchrow(
            "SELECT step, lease_until FROM order_sagas WHERE order_id = $1",
            uuid.UUID(placed["id"]),
        )
        assert saga is not None
        assert (saga["step"], saga["lease_until"]) == ("done", None)
        assert await shop.history(placed["id"]) == [
            "order.placed",
            "stock.reserved",
            "payment.authorized",
            "order.confirmed",
        ]
    finally:
        await shop.catalog.cleanup(products_db)

"""The orders service's business series in ``/metrics``: final statuses counted once per order
(a repeated answer changes nothing), and the saga backlog gauges and ``/readyz`` figures,
measured in the real database."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from core.testing import wait_for
from services.orders import Settings
from services.orders.health import _BACKLOG, measure_backlog
from tests.services.orders.conftest import (
    Services,
    ServicesFactory,
    answer_reserved_again,
    new_shop,
)
from tests.services.orders.helpers import Shop
from tests.services.products.helpers import Client


async def _series(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = await (await client.get("/metrics")).text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_confirmed_order_counts_once_even_when_an_answer_repeats(
    shop: Shop, services: Services
) -> None:
    mug = await shop.product(stock=5, price_cents=1250)
    placed = await shop.place([(mug["id"], 2)])
    assert (await shop.outcome(placed["id"]))["status"] == "confirmed"
    await shop.settled(placed["id"])
    series = await _series(services.orders)
    assert series["orders_confirmed_total", ()] == 1
    currency = (await shop.get(placed["id"]))["currency"]
    assert series["orders_revenue_cents_total", (("currency", currency),)] == 2500

    await answer_reserved_again(
        shop, services, placed["id"], mug["id"], 2
    )  # the stock answer, delivered again
    await shop.settled(placed["id"])
    series = await _series(services.orders)
    assert series["orders_confirmed_total", ()] == 1
    assert series["orders_revenue_cents_total", (("currency", currency),)] == 2500
    assert ("orders_rejected_total", (("reason", "reservation_timeout"),)) not in series


async def test_the_saga_backlog_is_measured_and_a_rejection_counts_once(
    start_services: ServicesFactory,
    orders_settings: Settings,
    products_db: asyncpg.Connection,
    orders_db: asyncpg.Connection,
) -> None:
    # The products service never answers: the saga waits for the stock until its deadline.
    services = await start_services(
        deaf=True,
        reservation_timeout=3.0,
        health_details_interval=0.05,
        health_saga_backlog_warn=0,
    )
    shop = new_shop(services, orders_settings, orders_db, products_db)
    try:
        mug = await shop.product(stock=2)
        placed = await shop.place([(mug["id"], 1)])

        async def waiting() -> dict[str, Any]:
            series = await _series(services.orders)
            readyz = await services.orders.get("/readyz")
            body: dict[str, Any] = await readyz.json()
            pending = body.get("details", {}).get("saga_pending", {})
            if (
                series["orders_saga_pending", ()] >= 1
                and pending.get("value", 0) >= 1
                and series["orders_saga_oldest_pending_seconds", ()] > 0
            ):
                return {"status": readyz.status, "body": body}
            return {}

        seen = await wait_for(waiting, within=5)
        assert seen["status"] == 200  # a backlog warns; it does not take the instance out
        assert seen["body"]["status"] == "ok"
        pending = seen["body"]["details"]["saga_pending"]
        assert (pending["status"], pending["threshold"]) == ("warn", 0)
        oldest = seen["body"]["details"]["saga_oldest_pending_seconds"]
        assert oldest["status"] == "ok"  # far from the default HEALTH_SAGA_AGE_WARN

        order = await shop.outcome(placed["id"], within=10)
        assert order["reason"] == "reservation_timeout"
        await shop.settled(placed["id"])

        async def drained() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            series = await _series(services.orders)
            return series if series["orders_saga_pending", ()] == 0 else {}

        series = await wait_for(drained, within=5)
        assert series["orders_saga_oldest_pending_seconds", ()] == 0
        assert series["orders_rejected_total", (("reason", "reservation_timeout"),)] == 1
        assert series.get(("orders_confirmed_total", ()), 0) == 0
    finally:
        await shop.catalog.cleanup(products_db)


async def test_the_oldest_pending_saga_is_found_past_the_count_cap(
    orders_db: asyncpg.Connection,
) -> None:
    # In a transaction rolled back at the end: the session's database stays as it was, and
    # now() is the same instant for the rows and the measurement.
    transaction = orders_db.transaction()
    await transaction.start()
    try:
        # Newest first: the rows a capped scan meets first are not the oldest; the oldest,
        # ten days old, is far older than any saga of this session's other tests.
        for hours in (1, 2, 3, 4, 240):
            await orders_db.execute(
                "INSERT INTO order_sagas (order_id, step, deadline, payment_token, started_at)"
                " VALUES ($1, 'reserving', now() + make_interval(hours => $2), 'tok_visa',"
                " now() - make_interval(hours => $2))",
                uuid.uuid4(),
                hours,
            )
        backlog = await measure_backlog(orders_db, cap=2)
        assert backlog.pending == 2  # the count stops at the cap
        assert backlog.oldest_seconds == 240 * 3600  # the oldest of all, not of those counted

        # The oldest is read from the partial index of unfinished sagas by start.
        await orders_db.execute("SET LOCAL enable_seqscan = off")
        plan = await orders_db.fetchval(f"EXPLAIN (FORMAT JSON) {_BACKLOG}", 2)
        assert "order_sagas_pending_started" in plan
    finally:
        await transaction.rollback()

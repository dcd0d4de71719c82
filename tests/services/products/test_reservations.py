"""Reservations keyed by order id: all or nothing, idempotent, safe under concurrency."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from services.products.keys import PRODUCTS_SERVICE
from services.products.service import ProductsService
from tests.services.products.conftest import Catalog
from tests.services.products.helpers import (
    Client,
    catalog_state,
    inventory_path,
    inventory_row,
    outbox_events,
    product_path,
)


def service_of(client: Client) -> ProductsService:
    """The running service behind ``client``."""
    return client.app[PRODUCTS_SERVICE]


async def reservation(db: asyncpg.Connection, order_id: uuid.UUID) -> dict[str, Any] | None:
    """The stored reservation of an order, with its lines."""
    row = await db.fetchrow(
        "SELECT status, reason, product_ids FROM reservations WHERE order_id = $1", order_id
    )
    if row is None:
        return None
    lines = await db.fetch(
        "SELECT product_id, quantity FROM reservation_lines WHERE order_id = $1", order_id
    )
    return {**dict(row), "lines": {str(r["product_id"]): r["quantity"] for r in lines}}


async def test_200_concurrent_reservations_of_stock_50_reserve_exactly_50(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    product = await catalog.product(stock=50)
    pid = uuid.UUID(product["id"])
    service = service_of(products_client)
    orders = [catalog.order() for _ in range(200)]

    outcomes = await asyncio.gather(*(service.reserve(order, [(pid, 1)]) for order in orders))

    reserved = [o for o in outcomes if o.status == "reserved"]
    failed = [o for o in outcomes if o.status == "failed"]
    assert len(reserved) == 50
    assert len(failed) == 150
    assert all(o.changed for o in outcomes)
    assert {o.reason for o in failed} == {"out_of_stock"}
    assert all(o.product_ids == [pid] for o in failed)
    assert await inventory_row(products_db, pid) == {"on_hand": 50, "reserved": 50, "available": 0}
    assert (
        await products_db.fetchval(
            "SELECT count(*) FROM reservation_lines WHERE product_id = $1", pid
        )
        == 50
    )
    inventory = await (await products_client.get(inventory_path(pid))).json()
    assert (inventory["reserved"], inventory["available"]) == (50, 0)
    assert (await (await products_client.get(product_path(pid))).json())["stock"] == 0
    assert len(await outbox_events(products_db, "inventory.reserved")) >= 50
    changed = await outbox_events(products_db, "inventory.changed", product_id=pid)
    assert sorted(e["data"]["reserved"] for e in changed) == list(range(1, 51))

    # Replaying the 50 successful orders (concurrently, too) changes nothing.
    before = await catalog_state(products_db)
    replays = await asyncio.gather(
        *(service.reserve(o.order_id, [(pid, 1)]) for o in reserved),
        *(service.reserve(o.order_id, [(pid, 1)]) for o in reserved),
    )
    assert all(r.status == "reserved" and not r.changed for r in replays)
    assert all(r.items == {pid: 1} for r in replays)
    after = await catalog_state(products_db)
    assert {k: v for k, v in after.items() if k != "outbox"} == {
        k: v for k, v in before.items() if k != "outbox"
    }
    assert await inventory_row(products_db, pid) == {"on_hand": 50, "reserved": 50, "available": 0}
    # each replay answered the saga again with the same outcome, and nothing else
    assert after["outbox"] == before["outbox"] + 100


async def test_a_replayed_failure_stays_a_failure_even_once_stock_arrives(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    product = await catalog.product(stock=1)
    pid = uuid.UUID(product["id"])
    service = service_of(products_client)
    order = catalog.order()

    first = await service.reserve(order, [(pid, 3)])
    await service.inventory.set_on_hand(pid, 100)
    again = await service.reserve(order, [(pid, 3)])

    assert (first.status, first.reason, first.product_ids) == ("failed", "out_of_stock", [pid])
    assert (again.status, again.reason, again.changed) == ("failed", "out_of_stock", False)
    assert await inventory_row(products_db, pid) == {
        "on_hand": 100,
        "reserved": 0,
        "available": 100,
    }
    events = await outbox_events(products_db, "inventory.reservation_failed", order_id=order)
    assert [e["data"] for e in events] == [
        {"order_id": str(order), "reason": "out_of_stock", "product_ids": [str(pid)]}
    ] * 2


async def test_an_order_is_reserved_whole_or_not_at_all(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    plenty = uuid.UUID((await catalog.product(stock=10))["id"])
    scarce = uuid.UUID((await catalog.product(stock=1))["id"])
    service = service_of(products_client)
    before = await catalog_state(products_db)

    short = await service.reserve(catalog.order(), [(plenty, 3), (scarce, 2)])
    unknown = uuid.uuid4()
    lost = await service.reserve(catalog.order(), [(plenty, 1), (unknown, 1)])

    assert (short.status, short.reason, short.product_ids) == ("failed", "out_of_stock", [scarce])
    assert (lost.status, lost.reason, lost.product_ids) == ("failed", "unknown_product", [unknown])
    after = await catalog_state(products_db)
    assert after["inventory"] == before["inventory"]
    assert after["lines"] == before["lines"]

    order = catalog.order()
    whole = await service.reserve(order, [(plenty, 3), (scarce, 1), (plenty, 2)])
    assert whole.status == "reserved"
    assert whole.items == {plenty: 5, scarce: 1}  # repeated lines are summed
    assert await inventory_row(products_db, plenty) == {
        "on_hand": 10,
        "reserved": 5,
        "available": 5,
    }
    assert await inventory_row(products_db, scarce) == {"on_hand": 1, "reserved": 1, "available": 0}
    assert await reservation(products_db, order) == {
        "status": "reserved",
        "reason": None,
        "product_ids": [],
        "lines": {str(plenty): 5, str(scarce): 1},
    }
    (event,) = await outbox_events(products_db, "inventory.reserved", order_id=order)
    assert event["data"]["items"] == sorted(
        [{"product_id": str(plenty), "quantity": 5}, {"product_id": str(scarce), "quantity": 1}],
        key=lambda i: i["product_id"],
    )


async def test_release_gives_stock_back_once(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    pid = uuid.UUID((await catalog.product(stock=5))["id"])
    service = service_of(products_client)
    order = catalog.order()
    await service.reserve(order, [(pid, 4)])

    released = await asyncio.gather(*(service.release(order) for _ in range(5)))

    assert sorted(r.changed for r in released) == [False] * 4 + [True]
    assert all(r.status == "released" and r.items == {pid: 4} for r in released)
    assert await inventory_row(products_db, pid) == {"on_hand": 5, "reserved": 0, "available": 5}
    assert (await reservation(products_db, order) or {})["status"] == "released"
    events = await outbox_events(products_db, "inventory.released", order_id=order)
    assert [e["data"]["items"] for e in events] == [[{"product_id": str(pid), "quantity": 4}]] * 5
    changed = await outbox_events(products_db, "inventory.changed", order_id=order)
    assert [e["data"]["reason"] for e in changed] == ["reserved", "released"]
    # a placement replayed after the cancellation reserves nothing again
    replay = await service.reserve(order, [(pid, 4)])
    assert (replay.status, replay.changed) == ("released", False)
    assert await inventory_row(products_db, pid) == {"on_hand": 5, "reserved": 0, "available": 5}


async def test_a_cancellation_before_its_placement_leaves_a_tombstone(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    pid = uuid.UUID((await catalog.product(stock=5))["id"])
    service = service_of(products_client)
    order = catalog.order()

    early = await service.release(order)
    late = await service.reserve(order, [(pid, 2)])

    assert (early.status, early.changed, early.items) == ("released", True, {})
    assert (late.status, late.changed) == ("released", False)
    assert await inventory_row(products_db, pid) == {"on_hand": 5, "reserved": 0, "available": 5}


async def test_commit_on_shipping_takes_stock_off_the_shelf_once(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    pid = uuid.UUID((await catalog.product(stock=8))["id"])
    service = service_of(products_client)
    order = catalog.order()
    await service.reserve(order, [(pid, 3)])

    commits = await asyncio.gather(*(service.commit(order) for _ in range(4)))

    assert sorted(c.changed for c in commits) == [False, False, False, True]
    assert all(c.status == "committed" for c in commits)
    assert await inventory_row(products_db, pid) == {"on_hand": 5, "reserved": 0, "available": 5}
    changed = await outbox_events(products_db, "inventory.changed", order_id=order)
    assert [(e["data"]["reason"], e["data"]["on_hand"]) for e in changed] == [
        ("reserved", 8),
        ("committed", 5),
    ]
    # a shipped order cannot be released, nor reserved again
    before = await catalog_state(products_db)
    assert (await service.release(order)).status == "committed"
    assert (await service.reserve(order, [(pid, 3)])).status == "committed"
    assert (await catalog_state(products_db))["inventory"] == before["inventory"]
    # nothing to commit for unknown or failed orders
    assert (await service.commit(uuid.uuid4())).status == "unknown"
    failed = catalog.order()
    await service.reserve(failed, [(pid, 1000)])
    assert (await service.commit(failed)).status == "failed"
    assert (await catalog_state(products_db))["inventory"] == before["inventory"]


async def test_orders_locking_the_same_products_in_any_order_never_deadlock(
    catalog: Catalog, products_client: Client, products_db: asyncpg.Connection
) -> None:
    a = uuid.UUID((await catalog.product(stock=1000))["id"])
    b = uuid.UUID((await catalog.product(stock=1000))["id"])
    service = service_of(products_client)

    outcomes = await asyncio.gather(
        *(
            service.reserve(catalog.order(), [(a, 1), (b, 1)] if n % 2 else [(b, 1), (a, 1)])
            for n in range(100)
        ),
        *(service.inventory.set_on_hand(a, 1000) for _ in range(5)),
    )

    assert all(getattr(o, "status", "reserved") == "reserved" for o in outcomes)
    for pid in (a, b):
        assert await inventory_row(products_db, pid) == {
            "on_hand": 1000,
            "reserved": 100,
            "available": 900,
        }

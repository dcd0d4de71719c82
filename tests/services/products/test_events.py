"""The products service on the bus (in memory): catalog events out, the order saga's stock steps
in (order.placed / order.cancelled / order.shipped -> inventory.*)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import pytest

from core.bus import Envelope, Event
from core.testing import BusKit, EventLog, Received, wait_for
from services.orders.events import OrderCancelled, OrderLine, OrderPlaced, OrderShipped
from services.products import Settings, create_products_app
from services.products.events import (
    PUBLISHED_EVENTS,
    InventoryChanged,
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
)
from tests.services.products.conftest import Catalog
from tests.services.products.helpers import (
    PRODUCTS,
    Client,
    catalog_state,
    inventory_row,
    product_path,
)

E = TypeVar("E", bound=Event)


@dataclass
class Orders:
    """An outside "orders" service on the test's bus kit: publishes order events, records the
    products service's."""

    kit: BusKit
    log: EventLog

    async def one(self, event_cls: type[E], **data: Any) -> Received[E]:
        """Wait for exactly one such event."""
        return await self.log.one(event_cls, **data)

    def of(self, event_cls: type[E], **data: Any) -> list[Received[E]]:
        """The received events of ``event_cls`` whose data has these values."""
        return self.log.of(event_cls, **data)

    async def place(self, order_id: uuid.UUID, lines: list[tuple[str, int]]) -> Envelope:
        """Publish order.placed."""
        event = OrderPlaced(
            order_id=order_id,
            user_id=uuid.uuid4(),
            items=[
                OrderLine(product_id=uuid.UUID(pid), quantity=qty, unit_price_cents=100)
                for pid, qty in lines
            ],
            total_cents=100 * sum(qty for _, qty in lines),
            currency="USD",
        )
        return await self.kit.publish(event)


@pytest.fixture
async def orders(memory_bus_kit: BusKit) -> Orders:
    log = await memory_bus_kit.record(*PUBLISHED_EVENTS, patterns=["inventory.#", "product.#"])
    return Orders(memory_bus_kit, log)


@pytest.fixture
async def client(
    service_client: Callable[[Any], Awaitable[Client]],
    products_settings: Settings,
    orders: Orders,
) -> Client:
    return await service_client(
        create_products_app(products_settings, transport=orders.kit.transport())
    )


@pytest.fixture
async def shop(
    client: Client, admin: dict[str, str], products_db: asyncpg.Connection
) -> AsyncIterator[Catalog]:
    made = Catalog(client, admin)
    yield made
    await made.cleanup(products_db)


async def test_catalog_writes_publish_product_events_with_the_request_correlation_id(
    shop: Catalog, client: Client, orders: Orders
) -> None:
    headers = {**shop.admin, "X-Correlation-ID": "corr-catalog-1"}
    resp = await client.post(
        PRODUCTS,
        json={"sku": shop.sku(), "name": "Kettle", "price_cents": 2500, "stock": 3},
        headers=headers,
    )
    product = await resp.json()
    await client.patch(product_path(product["id"]), json={"price_cents": 2000}, headers=headers)
    await client.delete(product_path(product["id"]), headers=headers)

    created = await orders.one(ProductCreated, product_id=product["id"])
    updated = await orders.one(ProductUpdated, product_id=product["id"])
    deleted = await orders.one(ProductDeleted, product_id=product["id"])
    assert isinstance(created.event, ProductCreated)
    assert (created.event.name, created.event.price_cents, created.event.stock) == (
        "Kettle",
        2500,
        3,
    )
    assert isinstance(updated.event, ProductUpdated)
    assert (updated.event.price_cents, updated.event.changed) == (2000, ["price_cents"])
    assert isinstance(deleted.event, ProductDeleted)
    for message in (created, updated, deleted):
        assert message.envelope.correlation_id == "corr-catalog-1"
        assert message.envelope.source == "products"


async def test_order_placed_reserves_and_answers_inventory_reserved(
    shop: Catalog, client: Client, orders: Orders, products_db: asyncpg.Connection
) -> None:
    mug = await shop.product(stock=5)
    pot = await shop.product(stock=2)
    assert (await (await client.get(product_path(mug["id"]))).json())["stock"] == 5  # cached
    order = shop.order()

    placed = await orders.place(order, [(mug["id"], 3), (pot["id"], 2)])

    answer = await orders.one(InventoryReserved, order_id=order)
    assert isinstance(answer.event, InventoryReserved)
    assert {(str(i.product_id), i.quantity) for i in answer.event.items} == {
        (mug["id"], 3),
        (pot["id"], 2),
    }
    assert answer.envelope.causation_id == str(placed.id)
    assert answer.envelope.correlation_id == placed.correlation_id
    changes = [orders.one(InventoryChanged, product_id=pid) for pid in (mug["id"], pot["id"])]
    for change in changes:
        message = await change
        assert isinstance(message.event, InventoryChanged)
        assert (message.event.reason, message.event.order_id) == ("reserved", order)
    assert await inventory_row(products_db, mug["id"]) == {
        "on_hand": 5,
        "reserved": 3,
        "available": 2,
    }
    # the cached products are invalidated once the consumer's transaction has committed
    # (the answer may be on the bus a moment before): never staler than the write plus 1 s

    async def stocks() -> bool:
        mine = [await (await client.get(product_path(p["id"]))).json() for p in (mug, pot)]
        return [p["stock"] for p in mine] == [2, 0]

    await wait_for(stocks, within=1.0)


async def test_an_order_that_cannot_be_served_is_answered_reservation_failed(
    shop: Catalog, client: Client, orders: Orders, products_db: asyncpg.Connection
) -> None:
    mug = await shop.product(stock=1)
    before = await catalog_state(products_db)
    short, unknown = shop.order(), shop.order()
    ghost = str(uuid.uuid4())

    await orders.place(short, [(mug["id"], 2)])
    await orders.place(unknown, [(mug["id"], 1), (ghost, 1)])

    out_of_stock = await orders.one(InventoryReservationFailed, order_id=short)
    not_found = await orders.one(InventoryReservationFailed, order_id=unknown)
    assert isinstance(out_of_stock.event, InventoryReservationFailed)
    assert isinstance(not_found.event, InventoryReservationFailed)
    assert (out_of_stock.event.reason, out_of_stock.event.product_ids) == (
        "out_of_stock",
        [uuid.UUID(mug["id"])],
    )
    assert (not_found.event.reason, not_found.event.product_ids) == (
        "unknown_product",
        [uuid.UUID(ghost)],
    )
    assert (await catalog_state(products_db))["inventory"] == before["inventory"]
    assert orders.of(InventoryChanged, product_id=mug["id"]) == []


async def test_each_event_is_processed_once_and_each_order_decided_once(
    shop: Catalog, client: Client, orders: Orders, products_db: asyncpg.Connection
) -> None:
    mug = await shop.product(stock=10)
    order = shop.order()
    placed = await orders.place(order, [(mug["id"], 4)])
    await orders.one(InventoryReserved, order_id=order)

    # the same envelope again (a redelivery): dropped by the inbox, nothing published
    await orders.kit.publish_envelope(placed)
    # the same order in a new envelope (orders re-sent it): the same answer, nothing changed
    await orders.place(order, [(mug["id"], 4)])

    async def two_answers() -> bool:
        return len(orders.of(InventoryReserved, order_id=order)) == 2

    await wait_for(two_answers)
    processed = await products_db.fetchval(
        "SELECT count(*) FROM inbox WHERE event_id = $1", placed.id
    )
    assert processed == 1
    assert await inventory_row(products_db, mug["id"]) == {
        "on_hand": 10,
        "reserved": 4,
        "available": 6,
    }
    assert len(orders.of(InventoryChanged, order_id=order)) == 1


async def test_cancel_releases_and_ship_commits(
    shop: Catalog, client: Client, orders: Orders, products_db: asyncpg.Connection
) -> None:
    mug = await shop.product(stock=10)
    cancelled, shipped = shop.order(), shop.order()
    await orders.place(cancelled, [(mug["id"], 2)])
    await orders.place(shipped, [(mug["id"], 3)])
    await orders.one(InventoryReserved, order_id=cancelled)
    await orders.one(InventoryReserved, order_id=shipped)

    await orders.kit.publish(OrderCancelled(order_id=cancelled, reason="customer asked"))
    await orders.kit.publish(OrderShipped(order_id=shipped))

    released = await orders.one(InventoryReleased, order_id=cancelled)
    assert isinstance(released.event, InventoryReleased)
    assert [(str(i.product_id), i.quantity) for i in released.event.items] == [(mug["id"], 2)]
    await orders.one(InventoryChanged, order_id=shipped, reason="committed")
    assert await inventory_row(products_db, mug["id"]) == {
        "on_hand": 7,
        "reserved": 0,
        "available": 7,
    }

    async def inventory() -> bool:
        body = await (await client.get(f"{product_path(mug['id'])}/inventory")).json()
        return (body["on_hand"], body["reserved"]) == (7, 0)

    await wait_for(inventory, within=1.0)


async def test_an_invalid_order_placed_is_parked_and_changes_nothing(
    shop: Catalog, client: Client, orders: Orders, products_db: asyncpg.Connection
) -> None:
    mug = await shop.product(stock=10)
    before = await catalog_state(products_db)
    bad = Envelope(
        type="order.placed",
        source="orders",
        data={
            "order_id": str(shop.order()),
            "user_id": str(uuid.uuid4()),
            "items": [{"product_id": mug["id"], "quantity": 0, "unit_price_cents": 1}],
            "total_cents": 0,
            "currency": "USD",
        },
    )

    await orders.kit.publish_envelope(bad)

    async def parked() -> list[Any]:
        return await orders.kit.parked("products")

    (message,) = await wait_for(parked)
    assert message.message_id == str(bad.id)
    assert await catalog_state(products_db) == before

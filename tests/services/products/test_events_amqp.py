"""The stock step of the order saga over real RabbitMQ: a plain bus publishes order.placed, the
products service reserves and answers inventory.reserved (and inventory.reservation_failed).

The test runs on an exchange and queues of its own, deleted afterwards: its orders never reach
the queues of services running on the same broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiormq
import asyncpg
import pytest

from core.bus import Bus, Message, RetryPolicy
from core.bus.amqp import AmqpTransport, delay_queue_name, parking_queue_name
from core.testing import wait_for
from services.orders.events import OrderLine, OrderPlaced
from services.products import Settings, create_products_app
from services.products.events import PUBLISHED_EVENTS, InventoryReserved
from tests.services.products.conftest import Catalog
from tests.services.products.helpers import Client, inventory_row

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


async def delete_topology(exchange: str, *queues: str) -> None:
    """Delete a test exchange, its queues and their retry and parking queues from the broker."""
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        await channel.exchange_delete(exchange)
        for queue in queues:
            names = [queue, parking_queue_name(queue)]
            names += [delay_queue_name(queue, d) for d in RetryPolicy().delays]
            for name in names:
                await channel.queue_delete(name)
    finally:
        await connection.close()


@dataclass(frozen=True)
class Topology:
    """This test's exchange, and the queues of its products service and orders service."""

    exchange: str
    products: str
    orders: str

    def transport(self) -> AmqpTransport:
        """A transport on the test's exchange."""
        return AmqpTransport(AMQP_URL, exchange=self.exchange)


@pytest.fixture
async def topology() -> AsyncIterator[Topology]:
    suffix = uuid.uuid4().hex[:8]
    names = Topology(f"test-events-{suffix}", f"test-products-{suffix}", f"test-orders-{suffix}")
    yield names
    await delete_topology(names.exchange, names.products, names.orders)


@pytest.fixture
async def orders_bus(topology: Topology) -> AsyncIterator[tuple[Bus, list[Message]]]:
    """A plain bus on RabbitMQ, as the order service would run, collecting inventory.*."""
    bus = Bus(topology.transport(), source="orders")
    received: list[Message] = []

    async def collect(message: Message) -> None:
        received.append(message)

    bus.subscribe("inventory.*", collect, queue=topology.orders, events=PUBLISHED_EVENTS)
    await bus.start()
    yield bus, received
    await bus.stop()


async def test_order_placed_over_rabbitmq_is_answered_inventory_reserved(
    service_client: Callable[[Any], Awaitable[Client]],
    products_settings: Settings,
    products_db: asyncpg.Connection,
    admin: dict[str, str],
    topology: Topology,
    orders_bus: tuple[Bus, list[Message]],
) -> None:
    settings = products_settings.model_copy(
        update={"bus_transport": "amqp", "bus_queue": topology.products}
    )
    client = await service_client(create_products_app(settings, transport=topology.transport()))
    catalog = Catalog(client, admin)
    bus, received = orders_bus
    try:
        product = await catalog.product(stock=3)
        served, refused = catalog.order(), catalog.order()

        async def answer(order_id: uuid.UUID) -> Message:
            async def arrived() -> list[Message]:
                return [
                    m
                    for m in received
                    if m.envelope.type != "inventory.changed"
                    and m.envelope.data.get("order_id") == str(order_id)
                ]

            (message,) = await wait_for(arrived, within=15)
            return message

        answers: dict[str, Message] = {}
        for order_id in (served, refused):  # one after the other: the second finds 1 left
            await bus.publish(
                OrderPlaced(
                    order_id=order_id,
                    user_id=uuid.uuid4(),
                    items=[
                        OrderLine(
                            product_id=uuid.UUID(product["id"]),
                            quantity=2,
                            unit_price_cents=product["price_cents"],
                        )
                    ],
                    total_cents=2 * product["price_cents"],
                    currency="USD",
                )
            )
            message = await answer(order_id)
            answers[message.envelope.type] = message

        reserved = answers["inventory.reserved"]
        assert isinstance(reserved.event, InventoryReserved)
        assert reserved.event.order_id == served
        assert reserved.envelope.source == "products"
        assert reserved.queue == topology.orders
        failed = answers["inventory.reservation_failed"].envelope.data
        assert failed == {
            "order_id": str(refused),
            "reason": "out_of_stock",
            "product_ids": [product["id"]],
        }
        assert await inventory_row(products_db, product["id"]) == {
            "on_hand": 3,
            "reserved": 2,
            "available": 1,
        }
    finally:
        await catalog.cleanup(products_db)

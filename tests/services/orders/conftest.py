"""Fixtures of the orders service tests: a products service and an orders service on one bus.

The two services run in this process on a shared in-memory bus (tests of the RabbitMQ path and
of real processes build their own); the orders service reads prices from the products service
over real HTTP. Deadlines of the saga are short. Tokens are issued with the development key
pair, for users of the test's own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

import migrations
from core import token_codec
from core.bus import Bus, InMemoryTransport
from core.testing import wait_for
from services.orders import Settings, create_orders_app
from services.orders.payment import PaymentProvider
from services.products import Settings as ProductsSettings
from services.products import create_products_app
from services.products.events import InventoryReserved, ReservedItem
from services.users.roles import permissions_of
from tests.services.orders.helpers import Shop, User
from tests.services.products.conftest import Catalog
from tests.services.products.helpers import Client


@pytest.fixture(scope="session")
def orders_dsn(throwaway_database: Callable[[str, Any], str]) -> str:
    """A migrated orders database for this test session."""
    return throwaway_database("orders", migrations.location("orders"))


@pytest.fixture
async def orders_db(orders_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the orders database, to check what happened."""
    conn = await asyncpg.connect(orders_dsn)
    yield conn
    await conn.close()


@pytest.fixture
def orders_settings(orders_dsn: str, redis_namespace: str) -> Settings:
    """Settings of an orders service on the throw-away database, in-memory bus, short saga
    deadlines (``products_url`` is set by ``shop``)."""
    return Settings(
        env="test",
        database_url=orders_dsn,
        redis_namespace=f"{redis_namespace}:{uuid.uuid4().hex[:8]}",
        bus_transport="memory",
        reservation_timeout=5.0,
        payment_timeout=1.0,
        saga_poll_interval=0.05,
    )


def issue(settings: Settings, roles: list[str], user_id: str | None = None) -> User:
    """A user of the test with a fresh access token."""
    user_id = user_id or str(uuid.uuid4())
    codec = token_codec(settings, signing=True)
    token = codec.issue(
        "access",
        user_id=user_id,
        roles=roles,
        permissions=permissions_of(roles),
        family=str(uuid.uuid4()),
    ).token
    return User(user_id, {"Authorization": f"Bearer {token}"})


@dataclass
class Services:
    """The running services of a test."""

    products: Client
    orders: Client
    transport: InMemoryTransport


ServicesFactory = Callable[..., Awaitable[Services]]


@pytest.fixture
async def start_services(
    service_client: Callable[[Any], Awaitable[Client]],
    products_settings: ProductsSettings,
    orders_settings: Settings,
) -> ServicesFactory:
    """A factory: start a products and an orders service on one in-memory bus (settings of the
    orders service overridden by keyword, a ``payment`` provider of the test's own)."""

    async def factory(
        *, payment: PaymentProvider | None = None, deaf: bool = False, **overrides: Any
    ) -> Services:
        """``deaf``: the products service serves prices but is on another bus."""
        transport = InMemoryTransport()
        products = await service_client(
            create_products_app(
                products_settings, transport=InMemoryTransport() if deaf else transport
            )
        )
        settings = orders_settings.model_copy(
            update={"products_url": str(products.make_url("")).rstrip("/"), **overrides}
        )
        orders = await service_client(
            create_orders_app(settings, transport=transport, payment=payment)
        )
        return Services(products, orders, transport)

    return factory


def new_shop(
    services: Services,
    settings: Settings,
    orders_db: asyncpg.Connection,
    products_db: asyncpg.Connection,
) -> Shop:
    """A shop on ``services``: an admin, a customer and another customer, and their catalog
    (the ``shop`` fixture's, for tests that start services of their own)."""
    admin = issue(settings, ["admin", "customer"])
    return Shop(
        catalog=Catalog(services.products, admin.headers),
        orders=services.orders,
        products=services.products,
        admin=admin,
        customer=issue(settings, ["customer"]),
        other=issue(settings, ["customer"]),
        orders_db=orders_db,
        products_db=products_db,
    )


async def answer_reserved_again(
    shop: Shop, services: Services, order_id: str, product_id: str, quantity: int
) -> None:
    """Publish ``inventory.reserved`` for an order that had it already (a redelivered answer,
    with a new event id), and wait until the orders service has handled it."""
    bus = Bus(services.transport, source="products")
    await bus.connect()
    envelope = await bus.publish(
        InventoryReserved(
            order_id=uuid.UUID(order_id),
            items=[ReservedItem(product_id=uuid.UUID(product_id), quantity=quantity)],
        )
    )

    async def handled() -> bool:
        seen = await shop.orders_db.fetchval(
            "SELECT count(*) FROM inbox WHERE consumer = 'orders:inventory.reserved'"
            " AND event_id = $1",
            envelope.id,
        )
        return bool(seen)

    await wait_for(handled, within=5)


@pytest.fixture
async def services(start_services: ServicesFactory) -> Services:
    """A products and an orders service on one in-memory bus."""
    return await start_services()


@pytest.fixture
async def shop(
    services: Services,
    orders_settings: Settings,
    products_db: asyncpg.Connection,
    orders_db: asyncpg.Connection,
) -> AsyncIterator[Shop]:
    """The test's catalog, users and orders; its products and reservations are deleted after."""
    made = new_shop(services, orders_settings, orders_db, products_db)
    catalog = made.catalog
    yield made

    async def sagas_done() -> bool:  # the next test's runner must not inherit this test's work
        left = await orders_db.fetchval("SELECT count(*) FROM order_sagas WHERE step <> 'done'")
        return bool(left == 0)

    try:
        await wait_for(sagas_done, within=15)
    finally:
        await catalog.cleanup(products_db)

"""The payment step: idempotent per order, and an authorization that lands after a cancellation
is refunded. A provider of the test's own wraps the simulated one to hold its answers back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from core.testing import wait_for
from services.orders import Settings
from services.orders.payment import PaymentResult, RefundResult, SimulatedPaymentProvider
from tests.services.orders.conftest import Services, ServicesFactory, issue
from tests.services.orders.helpers import Shop, order_path
from tests.services.products.conftest import Catalog


class GatedProvider:
    """The simulated provider, whose authorizations wait for the test to open the gate."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.gate = asyncio.Event()
        self.calls = 0
        self.waiting = asyncio.Event()
        self._inner: SimulatedPaymentProvider | None = None
        self._pool: asyncpg.Pool | None = None

    async def inner(self) -> SimulatedPaymentProvider:
        if self._inner is None:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
            self._inner = SimulatedPaymentProvider(self._pool)
        return self._inner

    async def authorize(
        self, order_id: uuid.UUID, *, token: str, amount_cents: int, currency: str
    ) -> PaymentResult:
        self.calls += 1
        self.waiting.set()
        await self.gate.wait()
        inner = await self.inner()
        return await inner.authorize(
            order_id, token=token, amount_cents=amount_cents, currency=currency
        )

    async def refund(self, order_id: uuid.UUID) -> RefundResult | None:
        return await (await self.inner()).refund(order_id)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


@pytest.fixture
async def gated(orders_dsn: str) -> AsyncIterator[GatedProvider]:
    provider = GatedProvider(orders_dsn)
    yield provider
    await provider.close()


async def test_an_authorization_after_the_cancellation_is_refunded(
    start_services: ServicesFactory,
    gated: GatedProvider,
    orders_settings: Settings,
    products_db: asyncpg.Connection,
    orders_db: asyncpg.Connection,
) -> None:
    services: Services = await start_services(payment=gated, payment_timeout=10.0)
    admin = issue(orders_settings, ["admin", "customer"])
    shop = Shop(
        catalog=Catalog(services.products, admin.headers),
        orders=services.orders,
        products=services.products,
        admin=admin,
        customer=issue(orders_settings, ["customer"]),
        other=admin,
        orders_db=orders_db,
        products_db=products_db,
    )
    try:
        mug = await shop.product(stock=2)
        placed = await shop.place([(mug["id"], 2)])
        await asyncio.wait_for(gated.waiting.wait(), 5)  # the payment call is in flight

        resp = await shop.orders.post(
            order_path(placed["id"], "cancel"), headers=shop.customer.headers
        )
        assert resp.status == 202
        gated.gate.set()  # the provider charges now, after the cancellation

        await shop.settled(placed["id"])
        history = await shop.history(placed["id"])
        assert history.count("payment.authorized") == 1
        assert history.count("payment.refunded") == 1
        assert history.index("payment.refunded") > history.index("payment.authorized")
        assert (await shop.get(placed["id"]))["status"] == "cancelled"
        status = await orders_db.fetchval(
            "SELECT status FROM payments WHERE order_id = $1", uuid.UUID(placed["id"])
        )
        assert status == "refunded"

        async def released() -> bool:
            return bool((await shop.inventory(mug["id"]))["reserved"] == 0)

        await wait_for(released, within=5)
        assert gated.calls == 1
    finally:
        gated.gate.set()
        await shop.catalog.cleanup(products_db)


async def test_the_simulated_provider_charges_once_per_order(orders_dsn: str) -> None:
    pool = await asyncpg.create_pool(orders_dsn, min_size=1, max_size=4)
    try:
        provider = SimulatedPaymentProvider(pool)
        order_id = uuid.uuid4()
        results = await asyncio.gather(
            *(
                provider.authorize(order_id, token="tok_visa", amount_cents=700, currency="USD")
                for _ in range(5)
            )
        )
        assert {r.payment_id for r in results} == {results[0].payment_id}
        assert {r.status for r in results} == {"authorized"}
        row = await pool.fetchrow("SELECT * FROM payments WHERE order_id = $1", order_id)
        assert row is not None
        assert (row["status"], row["amount_cents"], row["authorizations"]) == ("authorized", 700, 5)
        first, second = await provider.refund(order_id), await provider.refund(order_id)
        assert first is not None
        assert first.first
        assert second is not None
        assert not second.first
        declined = await provider.authorize(
            uuid.uuid4(), token="tok_decline", amount_cents=1, currency="USD"
        )
        assert declined.status == "declined"
        assert await provider.refund(uuid.uuid4()) is None
    finally:
        await pool.close()

"""The saga across real processes over RabbitMQ: the orders service is SIGKILLed in the middle of
sagas and started again; every order still reaches a final status, the reserved stock is exactly
that of the confirmed orders, and no payment is authorized twice.

The orders service runs as ``aioshop serve orders`` (a child process); the products service in
this process, serving real HTTP for prices. Both use an exchange and queues of this test's own,
deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from core.bus.amqp import AmqpTransport
from core.testing import free_port, wait_for
from services.orders import Settings
from services.products import Settings as ProductsSettings
from services.products import create_products_app
from tests.services.orders.conftest import issue
from tests.services.orders.helpers import ORDERS, order_body
from tests.services.products.conftest import Catalog
from tests.services.products.helpers import Client, inventory_row
from tests.services.products.test_events_amqp import AMQP_URL, delete_topology

pytestmark = pytest.mark.slow


@dataclass
class OrdersProcess:
    """``aioshop serve orders`` as a child process that can be killed and started again."""

    env: dict[str, str]
    port: int
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Start it and wait until it is ready."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            "serve",
            "orders",
            "--port",
            str(self.port),
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

        async def ready() -> bool:
            assert self.process is not None
            assert self.process.returncode is None
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{self.url}/readyz") as resp:
                    return resp.status == 200
            return False

        await wait_for(ready, within=30, interval=0.1)

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    async def stop(self) -> None:
        """Stop it if it runs (SIGTERM, then SIGKILL)."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


@pytest.fixture
async def topology() -> AsyncIterator[tuple[str, str, str]]:
    suffix = uuid.uuid4().hex[:8]
    names = (f"test-kill-{suffix}", f"test-kill-products-{suffix}", f"test-kill-orders-{suffix}")
    yield names
    await delete_topology(*names)


async def test_sigkill_mid_saga_then_restart_every_order_settles_correctly(
    topology: tuple[str, str, str],
    service_client: Callable[[Any], Awaitable[Client]],
    products_settings: ProductsSettings,
    products_db: asyncpg.Connection,
    orders_db: asyncpg.Connection,
    orders_settings: Settings,
    orders_dsn: str,
) -> None:
    exchange, products_queue, orders_queue = topology
    settings = products_settings.model_copy(
        update={"bus_transport": "amqp", "bus_queue": products_queue}
    )
    products = await service_client(
        create_products_app(settings, transport=AmqpTransport(AMQP_URL, exchange=exchange))
    )
    admin = issue(orders_settings, ["admin", "customer"])
    customer = issue(orders_settings, ["customer"])
    catalog = Catalog(products, admin.headers)
    env = {
        **os.environ,
        "AIOSHOP_ENV": "test",
        "LOG_LEVEL": "WARNING",
        "ORDERS_DATABASE_URL": orders_dsn,
        "PRODUCTS_URL": str(products.make_url("")).rstrip("/"),
        "REDIS_NAMESPACE": orders_settings.redis_namespace,
        "BUS_TRANSPORT": "amqp",
        "ORDERS_BUS_EXCHANGE": exchange,
        "ORDERS_BUS_QUEUE": orders_queue,
        "ORDERS_RESERVATION_TIMEOUT": "15",
        "ORDERS_PAYMENT_TIMEOUT": "4",
        "ORDERS_SAGA_POLL_INTERVAL": "0.1",
        "ORDERS_SAGA_LEASE": "1",
    }
    service = OrdersProcess(env, free_port())
    async with aiohttp.ClientSession() as session:
        try:
            mug = await catalog.product(stock=30)
            pot = await catalog.product(stock=12)
            await service.start(session)
            tokens = ["tok_visa"] * 6 + ["tok_decline", "tok_timeout"]

            async def place(i: int) -> None:
                lines = [(mug["id"], 1 + i % 2)] + ([(pot["id"], 1)] if i % 3 == 0 else [])
                body = order_body(lines, tokens[i % len(tokens)])
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.post(
                        f"{service.url}{ORDERS}", json=body, headers=customer.headers
                    ) as resp:
                        assert resp.status in (202, 503), await resp.text()

            # Placements race the kill: some are answered, some are cut off mid-request.
            placing = [asyncio.create_task(place(i)) for i in range(60)]

            async def mid_saga() -> bool:
                rows = await orders_db.fetch(
                    """
                    SELECT s.step, count(*) AS n FROM order_sagas s
                      JOIN order_views v ON v.id = s.order_id
                     WHERE v.user_id = $1 GROUP BY s.step
                    """,
                    uuid.UUID(customer.id),
                )
                steps: dict[str, int] = {r["step"]: r["n"] for r in rows}
                # Placed orders at every stage: waiting for stock, for payment, and finished.
                return (
                    sum(steps.values()) >= 25
                    and steps.get("authorizing", 0) >= 1
                    and steps.get("done", 0) >= 1
                )

            await wait_for(mid_saga, within=30, interval=0.01)
            await service.kill()
            await asyncio.gather(*placing)
            steps = await orders_db.fetch(
                """
                SELECT s.step, count(*) AS n FROM order_sagas s
                  JOIN order_views v ON v.id = s.order_id
                 WHERE v.user_id = $1 GROUP BY s.step
                """,
                uuid.UUID(customer.id),
            )
            in_flight = sum(r["n"] for r in steps if r["step"] != "done")
            assert in_flight > 0, steps  # the kill did land in the middle of sagas

            await service.start(session)

            async def all_settled() -> bool:
                left = await orders_db.fetchval(
                    """
                    SELECT count(*) FROM order_sagas s JOIN order_views v ON v.id = s.order_id
                     WHERE v.user_id = $1 AND (s.step <> 'done' OR v.status = 'pending')
                    """,
                    uuid.UUID(customer.id),
                )
                return bool(left == 0)

            await wait_for(all_settled, within=60, interval=0.2)
            orders = await orders_db.fetch(
                "SELECT id, status, items FROM order_views WHERE user_id = $1",
                uuid.UUID(customer.id),
            )
            assert len(orders) >= 25
            assert {o["status"] for o in orders} <= {"confirmed", "rejected"}
            confirmed = [o for o in orders if o["status"] == "confirmed"]
            assert len(confirmed) >= 2
            shipped = confirmed[:2]
            for order in shipped:
                async with session.post(
                    f"{service.url}{ORDERS}/{order['id']}/ship", headers=admin.headers
                ) as resp:
                    assert resp.status == 200, await resp.text()

            def quantity(product_id: str, of: list[asyncpg.Record]) -> int:
                return sum(
                    line["quantity"]
                    for o in of
                    for line in orjson.loads(o["items"])
                    if line["product_id"] == product_id
                )

            async def stock_matches() -> bool:
                # reserved = what confirmed, unshipped orders hold; shipped stock left on_hand
                unshipped = confirmed[2:]
                for product, stock in ((mug, 30), (pot, 12)):
                    row = await inventory_row(products_db, product["id"])
                    if row["reserved"] != quantity(product["id"], unshipped):
                        return False
                    if row["on_hand"] != stock - quantity(product["id"], shipped):
                        return False
                return True

            await wait_for(stock_matches, within=30, interval=0.1)

            ids = [o["id"] for o in orders]
            authorized = await orders_db.fetch(
                """
                SELECT order_id, count(*) AS n FROM order_events
                 WHERE type = 'payment.authorized' AND order_id = ANY($1::uuid[])
                 GROUP BY order_id
                """,
                ids,
            )
            assert all(r["n"] == 1 for r in authorized), authorized
            payments = {
                r["order_id"]: r["status"]
                for r in await orders_db.fetch(
                    "SELECT order_id, status FROM payments WHERE order_id = ANY($1::uuid[])", ids
                )
            }
            for order in orders:
                held_payment = payments.get(order["id"]) == "authorized"
                assert held_payment == (order["status"] == "confirmed"), order
        finally:
            await service.stop()
            await catalog.cleanup(products_db)

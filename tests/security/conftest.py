"""The real system for the security suite: users, products, orders, the dashboard and the gateway,
each its own process on a free loopback port (``AIOSHOP_ENV=test``), on throw-away databases, a
Redis namespace of the session and a RabbitMQ exchange of the session (so that the order saga
runs as in production, and no event leaves this session).

Started once per session (a few seconds) and shared by every test of the package. The helpers of
``tests.gateway.conftest`` (free ports, readiness, ``ServiceProcess``) are reused.

Tests talk to the gateway only, through ``http`` (an ``aiohttp.ClientSession`` with the gateway
as base URL), as customers, admins, catalog managers, support and fulfillment staff made with
``make_user`` (registered through the gateway, roles written to the users database, logged in).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiormq
import asyncpg
import pytest

import migrations
from core.bus import RetryPolicy
from core.bus.amqp import delay_queue_name, parking_queue_name
from core.testing import free_port, wait_for
from tests.gateway.conftest import (  # the gateway tests' process helpers and fixtures
    ROOT,
    ServiceProcess,
    _answers,
    gateway_settings,
    make_gateway,
)

__all__ = [
    "PASSWORD",
    "ROLES",
    "Session",
    "System",
    "User",
    "gateway_settings",
    "make_gateway",
    "spawn",
]

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PASSWORD = "correct horse battery"
ROLES = ("customer", "admin", "catalog_manager", "support", "fulfillment")
PRODUCT_PRICE = 1250

# Strings that must never reach a client: a traceback, SQL, driver names, hosts, paths.
LEAKS = (
    "traceback",
    'file "',
    "asyncpg",
    "psycopg",
    "sqlalchemy",
    "select ",
    "insert into",
    "syntax error",
    "postgresql://",
    "redis://",
    "amqp://",
    "127.0.0.1",
    "localhost",
    "/work/",
    "/usr/",
    "site-packages",
    ".py",
    "exception",
    "errno",
    "connection refused",
)


def assert_no_leak(text: str) -> None:
    """Fail if ``text`` (a response body) shows any internal detail of ``LEAKS``."""
    lowered = text.lower()
    for leak in LEAKS:
        assert leak not in lowered, (leak, text[:2000])


@dataclass
class System:
    """The running system: every process, the gateway's URL and the databases behind it."""

    gateway: ServiceProcess
    users: ServiceProcess
    products: ServiceProcess
    orders: ServiceProcess
    web: ServiceProcess
    users_dsn: str
    products_dsn: str
    orders_dsn: str
    redis_namespace: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The gateway's base URL: the only entry point of the tests."""
        return self.gateway.url

    def processes(self) -> list[ServiceProcess]:
        """Every process of the system."""
        return [self.gateway, self.users, self.products, self.orders, self.web]

    def assert_alive(self) -> None:
        """Fail if any process of the system has exited."""
        for process in self.processes():
            assert process.process.poll() is None, process.log.read_text(encoding="utf-8")[-4000:]


def spawn(
    name: str,
    cmd: Sequence[str],
    env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    *,
    port: int,
    within: float = 40,
) -> Generator[ServiceProcess, None, None]:
    """Run ``cmd`` (an app listening on ``port``) until the generator is closed; ready when its
    ``/readyz`` answers 200. Stopped with SIGTERM (SIGKILL after 15 s)."""
    log = tmp_path_factory.mktemp(name) / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            list(cmd), env={**os.environ, **env}, cwd=ROOT, stdout=sink, stderr=sink
        )
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        assert process.poll() is None, log.read_text(encoding="utf-8")[-4000:]
        return await _answers(f"{url}/readyz")

    try:
        asyncio.run(wait_for(ready, within=within, interval=0.1))
        yield ServiceProcess(url, log, process)
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``process`` and reap it (SIGKILL if it takes more than 15 s)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _launch(name: str, port: int) -> list[str]:
    return [sys.executable, "-m", "tests.security.launch", name, "--port", str(port)]


async def _delete_topology(exchange: str, queues: Sequence[str]) -> None:
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


@pytest.fixture(scope="session")
def system(
    throwaway_database: Callable[[str, Path], str],
    redis_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[System]:
    """The whole system behind a gateway, as separate processes, for the session."""
    users_dsn = throwaway_database("security_users", migrations.location("users"))
    products_dsn = throwaway_database("security_products", migrations.location("products"))
    orders_dsn = throwaway_database("security_orders", migrations.location("orders"))
    suffix = uuid.uuid4().hex[:8]
    exchange = f"test-security-{suffix}"
    queues = [f"test-security-products-{suffix}", f"test-security-orders-{suffix}"]
    namespace = f"{redis_namespace}:sec"
    common = {
        "AIOSHOP_ENV": "test",
        "BCRYPT_ROUNDS": "4",
        "BUS_TRANSPORT": "amqp",
        "AMQP_URL": AMQP_URL,
        "SECURITY_BUS_EXCHANGE": exchange,
        "REDIS_NAMESPACE": namespace,
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
        "METRICS_SNAPSHOT_INTERVAL": "1",
        "HTTP_HEADER_TIMEOUT": "2",
        # The session shares PostgreSQL (100 connections) with every other test's servers.
        "DB_POOL_MAX_SIZE": "10",
    }
    ports = {name: free_port() for name in ("users", "products", "orders", "web", "gateway")}
    env = {
        "users": {**common, "USERS_DATABASE_URL": users_dsn},
        "products": {
            **common,
            "PRODUCTS_DATABASE_URL": products_dsn,
            "PRODUCTS_BUS_QUEUE": queues[0],
        },
        "orders": {
            **common,
            "ORDERS_DATABASE_URL": orders_dsn,
            "ORDERS_BUS_QUEUE": queues[1],
            "ORDERS_BUS_EXCHANGE": exchange,
            "PRODUCTS_URL": f"http://127.0.0.1:{ports['products']}",
            "ORDERS_SAGA_POLL_INTERVAL": "0.1",
        },
        # Public: the page renders the recent events on the server (the stored-XSS check).
        "web": {**common, "DASHBOARD_PUBLIC": "true"},
    }
    gateway_env = {
        **common,
        "BUS_TRANSPORT": "memory",
        "UPSTREAM_USERS": f"http://127.0.0.1:{ports['users']}",
        "UPSTREAM_PRODUCTS": f"http://127.0.0.1:{ports['products']}",
        "UPSTREAM_ORDERS": f"http://127.0.0.1:{ports['orders']}",
        "UPSTREAM_WEB": f"http://127.0.0.1:{ports['web']}",
        "READY_UPSTREAMS": '["users", "products", "orders", "web"]',
        "HEALTH_INTERVAL": "0.5",
        # Every test comes from 127.0.0.1: the per-address limits are tested with a gateway of
        # their own (test_api4), here they must not get in the way of a few hundred requests.
        "RATE_LIMIT_DEFAULT": "100000/60",
        "RATE_LIMIT_AUTH": "100000/60",
        "RATE_LIMIT_NAMESPACE": f"{namespace}:gw",
        "OPENAPI_CACHE_TTL": "0",
    }
    running: list[Generator[ServiceProcess, None, None]] = []

    def start(name: str, cmd: list[str], variables: dict[str, str]) -> ServiceProcess:
        generator = spawn(name, cmd, variables, tmp_path_factory, port=ports[name])
        running.append(generator)
        return next(generator)

    try:
        users = start("users", _launch("users", ports["users"]), env["users"])
        products = start("products", _launch("products", ports["products"]), env["products"])
        orders = start("orders", _launch("orders", ports["orders"]), env["orders"])
        web = start("web", _launch("web", ports["web"]), env["web"])
        gateway_cmd = [sys.executable, "-m", "gateway", "--port", str(ports["gateway"])]
        gateway = start("gateway", gateway_cmd, gateway_env)
        yield System(
            gateway, users, products, orders, web, users_dsn, products_dsn, orders_dsn, namespace
        )
    finally:
        for generator in reversed(running):
            generator.close()
        asyncio.run(_delete_topology(exchange, queues))


@pytest.fixture
async def http(system: System) -> AsyncIterator[aiohttp.ClientSession]:
    """A client of the gateway (``await http.get("/api/v1/products")``)."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base_url=system.url, timeout=timeout) as session:
        yield session


@dataclass
class User:
    """A registered, logged-in user of the system, with the roles a test gave them."""

    id: str
    email: str
    roles: list[str]
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        """Its ``Authorization`` header."""
        return {"Authorization": f"Bearer {self.access_token}"}


class Session:
    """What a test does as users of the system: register them, give them roles, place orders."""

    def __init__(self, http: aiohttp.ClientSession, system: System) -> None:
        self.http = http
        self.system = system

    async def register(self, *, full_name: str = "Security Test") -> dict[str, Any]:
        """Register a new customer; its body."""
        email = f"sec-{uuid.uuid4().hex[:12]}@example.com"
        body = {"email": email, "password": PASSWORD, "full_name": full_name}
        async with self.http.post("/api/v1/auth/register", json=body) as response:
            assert response.status == 201, await response.text()
            user: dict[str, Any] = await response.json()
            return user

    async def login(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        """Log in; the token pair."""
        body = {"email": email, "password": password}
        async with self.http.post("/api/v1/auth/login", json=body) as response:
            assert response.status == 200, await response.text()
            tokens: dict[str, Any] = await response.json()
            return tokens

    async def user(self, *roles: str) -> User:
        """A new user holding ``roles`` (``customer`` alone when none), logged in after the
        roles were written to the users database, so that its token carries their permissions."""
        held = list(roles or ("customer",))
        registered = await self.register()
        if held != ["customer"]:
            conn = await asyncpg.connect(self.system.users_dsn)
            try:
                await conn.execute(
                    "UPDATE users SET roles = $2::text[] WHERE id = $1",
                    uuid.UUID(registered["id"]),
                    held,
                )
            finally:
                await conn.close()
        tokens = await self.login(registered["email"])
        return User(
            registered["id"],
            registered["email"],
            held,
            tokens["access_token"],
            tokens["refresh_token"],
        )

    async def product(self, admin: User, *, stock: int = 1000, **fields: Any) -> dict[str, Any]:
        """A new product (made by ``admin``, a holder of ``catalog:write``); its body."""
        body = {
            "sku": f"SEC-{uuid.uuid4().hex[:10]}",
            "name": "Security test lamp",
            "price_cents": PRODUCT_PRICE,
            "stock": stock,
            **fields,
        }
        async with self.http.post("/api/v1/products", json=body, headers=admin.headers) as resp:
            assert resp.status == 201, await resp.text()
            product: dict[str, Any] = await resp.json()
            return product

    async def order(
        self, customer: User, product_id: str, *, token: str = "tok_visa", settle: bool = True
    ) -> dict[str, Any]:
        """An order of ``customer`` for one unit of ``product_id``; with ``settle``, once it
        has left ``pending`` (the saga ran over the bus). Its body."""
        body = {
            "items": [{"product_id": product_id, "quantity": 1}],
            "shipping_address": {"line1": "1 Main St", "city": "Springfield"},
            "payment": {"token": token},
        }
        async with self.http.post("/api/v1/orders", json=body, headers=customer.headers) as resp:
            assert resp.status == 202, await resp.text()
            order: dict[str, Any] = await resp.json()
        if not settle:
            return order

        async def settled() -> dict[str, Any] | None:
            path = f"/api/v1/orders/{order['id']}"
            async with self.http.get(path, headers=customer.headers) as resp:
                assert resp.status == 200, await resp.text()
                current: dict[str, Any] = await resp.json()
            return None if current["status"] == "pending" else current

        final: dict[str, Any] | None = await wait_for(settled, within=30, interval=0.05)
        assert final is not None
        return final


@pytest.fixture
def session(http: aiohttp.ClientSession, system: System) -> Session:
    """Users, products and orders of this test (see ``Session``)."""
    return Session(http, system)

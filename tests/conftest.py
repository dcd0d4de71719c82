"""Fixtures of aioshop's own suite, on top of the core.testing plugin (real servers)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from blockbuster import BlockBuster, blockbuster_ctx

import migrations
from services.products import Settings as ProductsSettings
from services.users import Settings as UsersSettings
from services.users import create_users_app

Client = TestClient[Any, Any]


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test whose code makes a blocking call inside the event loop.

    Allowed, as library behaviour that is not ours and happens once per new connection: asyncpg
    looking for ``~/.pgpass`` and client certificates, redis-py reading its own version.
    """
    with blockbuster_ctx() as bb:
        for function in bb.functions.values():
            function.can_block_in("asyncpg/connect_utils.py", "_parse_connect_dsn_and_args")
            function.can_block_in("redis/utils.py", "get_lib_version")
        yield bb


@pytest.fixture(scope="session")
def users_dsn(throwaway_database: Callable[[str, Any], str]) -> str:
    """A migrated users database for this test session."""
    return throwaway_database("users", migrations.location("users"))


@pytest.fixture
def users_settings(users_dsn: str, redis_namespace: str) -> UsersSettings:
    """Settings of a users service on the throw-away database: fast bcrypt, in-memory bus
    (tests of the RabbitMQ path set ``bus_transport="amqp"``)."""
    return UsersSettings(
        env="test",
        database_url=users_dsn,
        redis_namespace=redis_namespace,
        bcrypt_rounds=4,
        bus_transport="memory",
    )


@pytest.fixture
async def users_client(
    service_client: Callable[[Any], Awaitable[Client]], users_settings: UsersSettings
) -> Client:
    """A client of a running users service."""
    return await service_client(create_users_app(users_settings))


@pytest.fixture
async def users_db(users_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the users database, to check what a request changed."""
    conn = await asyncpg.connect(users_dsn)
    yield conn
    await conn.close()


@dataclass
class Account:
    """A registered user of a test, with a live session."""

    id: str
    email: str
    password: str
    access_token: str
    refresh_token: str
    roles: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header of this session."""
        return {"Authorization": f"Bearer {self.access_token}"}


AccountFactory = Callable[..., Awaitable[Account]]


@pytest.fixture
async def make_account(
    users_client: Client, users_db: asyncpg.Connection
) -> AsyncIterator[AccountFactory]:
    """A factory of registered, logged-in users; every user it made is deleted afterwards."""
    made: list[str] = []

    async def factory(*, admin: bool = False, password: str = "correct horse battery") -> Account:
        email = f"user-{uuid.uuid4().hex[:12]}@example.com"
        resp = await users_client.post(
            "/api/v1/auth/register",
            json={"email": email, "password": password, "full_name": "Test User"},
        )
        assert resp.status == 201, await resp.text()
        user_id = (await resp.json())["id"]
        made.append(user_id)
        if admin:
            await users_db.execute(
                "UPDATE users SET roles = ARRAY['admin', 'customer'] WHERE id = $1",
                uuid.UUID(user_id),
            )
        resp = await users_client.post(
            "/api/v1/auth/login", json={"email": email, "password": password}
        )
        assert resp.status == 200, await resp.text()
        tokens = await resp.json()
        return Account(
            id=user_id,
            email=email,
            password=password,
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            roles=["admin", "customer"] if admin else ["customer"],
        )

    yield factory
    if made:
        await users_db.execute("DELETE FROM users WHERE id = ANY($1::uuid[])", made)


# The products service --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def products_dsn(throwaway_database: Callable[[str, Any], str]) -> str:
    """A migrated products database for this test session."""
    return throwaway_database("products", migrations.location("products"))


@pytest.fixture
def products_settings(products_dsn: str, redis_namespace: str) -> ProductsSettings:
    """Settings of a products service on the throw-away database, with the cache on all three
    tiers in a Redis namespace of this test's own (inside the session's, deleted with it) and
    the in-memory bus (tests of the RabbitMQ path set ``bus_transport="amqp"``)."""
    return ProductsSettings(
        env="test",
        database_url=products_dsn,
        redis_namespace=f"{redis_namespace}:{uuid.uuid4().hex[:8]}",
        bus_transport="memory",
    )


@pytest.fixture
async def products_db(products_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the products database, to check what a request changed."""
    conn = await asyncpg.connect(products_dsn)
    yield conn
    await conn.close()

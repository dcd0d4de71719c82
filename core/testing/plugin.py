"""pytest plugin of core: throw-away databases, Redis namespaces, app clients, bus kits.

Registered through the ``pytest11`` entry point, so any project that installs aioshop gets these
fixtures. ``TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``) names
the server on which throw-away databases are created; ``TEST_AMQP_URL`` (default
``amqp://guest:guest@127.0.0.1:5672/``) the RabbitMQ of ``amqp_bus_kit``.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.migrate import drop_database, upgrade
from core.testing.bus import BusKit
from core.testing.tracing import SpanRecorder

__all__ = [
    "amqp_bus_kit",
    "bus_kit",
    "memory_bus_kit",
    "redis_namespace",
    "scratch_database_url",
    "service_client",
    "span_recorder",
    "throwaway_database",
]

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def scratch_database_url(database: str) -> str:
    """The URL of database ``database`` on the test server (``TEST_POSTGRES_URL``)."""
    server = os.environ.get("TEST_POSTGRES_URL", DEFAULT_SERVER)
    return urlunsplit(urlsplit(server)._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def throwaway_database() -> Iterator[Callable[[str, Path], str]]:
    """A factory: ``throwaway_database("users", migrations_path)`` returns the DSN of a fresh
    database migrated with the Alembic environment at ``migrations_path``.

    One database per name and test session; all are dropped when the session ends.
    """
    created: dict[str, str] = {}

    def factory(name: str, migrations: Path) -> str:
        if name not in created:
            dsn = scratch_database_url(f"test_{name}_{uuid.uuid4().hex[:8]}")
            upgrade(migrations, dsn)
            created[name] = dsn
        return created[name]

    yield factory
    for dsn in created.values():
        asyncio.run(drop_database(dsn))


@pytest.fixture(scope="session")
def redis_namespace() -> Iterator[str]:
    """A Redis key namespace of this test session, deleted at its end (``TEST_REDIS_URL``,
    default ``redis://127.0.0.1:6379/0``): tests never see each other's keys."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    yield namespace
    asyncio.run(_delete_namespace(os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS), namespace))


async def _delete_namespace(url: str, namespace: str) -> None:
    client = Redis.from_url(url, socket_connect_timeout=2)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    except (RedisError, OSError):
        pass  # nothing to clean on a server that is gone
    finally:
        await client.aclose()


@pytest.fixture
def service_client(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]:
    """A factory: ``await service_client(app)`` serves ``app`` on a free port; returns a client."""

    async def factory(app: web.Application) -> TestClient[web.Request, web.Application]:
        return await aiohttp_client(app)

    return factory


@pytest_asyncio.fixture
async def memory_bus_kit() -> AsyncIterator[BusKit]:
    """A ``BusKit`` on a shared in-memory transport of this test, closed after it."""
    kit = BusKit("memory")
    yield kit
    await kit.close()


@pytest_asyncio.fixture
async def amqp_bus_kit() -> AsyncIterator[BusKit]:
    """A ``BusKit`` on the real RabbitMQ, on an exchange of this test; its buses are stopped
    and its durable queues and exchange deleted after the test."""
    kit = BusKit("amqp")
    yield kit
    await kit.close()


@pytest_asyncio.fixture(params=["memory", "amqp"])
async def bus_kit(request: pytest.FixtureRequest) -> AsyncIterator[BusKit]:
    """``memory_bus_kit`` and ``amqp_bus_kit`` in turn: the test runs on both transports."""
    kit = BusKit(request.param)
    yield kit
    await kit.close()


@pytest.fixture
def span_recorder() -> Iterator[SpanRecorder]:
    """Tracing on for this test, every span kept in memory (``core.testing.SpanRecorder``);
    off again after it. Build the apps inside the test: only those get the tracing middleware."""
    recorder = SpanRecorder()
    recorder.start()
    yield recorder
    recorder.stop()

"""pytest plugin of core: throw-away databases, Redis namespaces, app clients.

Registered through the ``pytest11`` entry point, so any project that installs aioshop gets these
fixtures. ``TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``) names
the server on which throw-away databases are created.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from core.migrate import drop_database, upgrade

__all__ = [
    "redis_namespace",
    "scratch_database_url",
    "service_client",
    "throwaway_database",
]

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


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
def redis_namespace() -> str:
    """A Redis key namespace of this test session: tests never see each other's keys."""
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def service_client(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]:
    """A factory: ``await service_client(app)`` serves ``app`` on a free port; returns a client."""

    async def factory(app: web.Application) -> TestClient[web.Request, web.Application]:
        return await aiohttp_client(app)

    return factory

"""PostgreSQL through asyncpg: a pool per service, JSON codecs, a transaction helper."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
import asyncpg.pool
import orjson
from aiohttp import web

from core.health import HEALTH
from core.keys import DB_POOL

__all__ = ["Connection", "Repository", "create_pool", "postgres_ctx", "transaction"]

Connection: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
)


class _PooledConnection(asyncpg.Connection):
    """A pooled connection released without the reset query.

    asyncpg resets every released connection with one more round trip (``RESET ALL``, ``UNLISTEN
    *``, advisory unlocks). core never leaves session state on pooled connections, so that trip
    is skipped; open transactions are still rolled back on release. Use ``SET LOCAL`` inside a
    transaction, and a dedicated connection for ``LISTEN`` or session advisory locks.
    """

    def get_reset_query(self) -> str:
        return ""


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """An asyncpg pool whose connections speak JSON through orjson."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        connection_class=_PooledConnection,
        command_timeout=30,
        server_settings={"application_name": "aioshop"},
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def transaction(pool: asyncpg.Pool, **options: Any) -> AsyncIterator[Connection]:
    """Acquire a connection and run a transaction on it; commit on success, roll back on error."""
    async with pool.acquire() as conn, conn.transaction(**options):
        yield conn


def postgres_ctx(
    dsn: str, *, min_size: int = 1, max_size: int = 10
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` opening the pool as ``app[DB_POOL]``, with its readiness check."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(dsn, min_size=min_size, max_size=max_size)
        app[DB_POOL] = pool

        async def check() -> None:
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")

        app[HEALTH].add("postgres", check)
        try:
            yield
        finally:
            app[HEALTH].remove("postgres")
            await pool.close()

    return ctx


class Repository:
    """The base of a service's repositories: SQL on one pool.

    Methods take an optional connection so that a service can group several calls, of one or of
    several repositories on the same pool, in one transaction::

        async with repo.transaction() as conn:
            await repo.insert(..., conn=conn)
            await other_repo.update(..., conn=conn)
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection inside a new transaction."""
        async with transaction(self.pool) as conn:
            yield conn

    def _db(self, conn: Connection | None) -> Connection | asyncpg.Pool:
        """``conn`` when the caller runs in a transaction, else the pool."""
        return conn if conn is not None else self.pool

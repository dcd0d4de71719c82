"""PostgreSQL through asyncpg: a pool per service, JSON codecs, a transaction helper.

Every pool has two limits, so that a slow or saturated database answers 503 (with
``Retry-After``, see ``core.middleware.errors``) instead of holding requests without end:

- a statement timeout: PostgreSQL cancels a statement running longer (``statement_timeout``,
  raised as ``asyncpg.QueryCanceledError``), with asyncpg's ``command_timeout`` a little longer
  as the backstop for a server that no longer answers at all;
- an acquire timeout: waiting longer for a free pooled connection raises ``TimeoutError``. It is
  the default of every ``pool.acquire()``, so ``transaction``, ``Repository`` and
  ``pool.fetch*`` all have it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import asyncpg.pool
import orjson
from aiohttp import web

from core.health import HEALTH
from core.keys import DB_POOL

__all__ = [
    "DEFAULT_ACQUIRE_TIMEOUT",
    "DEFAULT_STATEMENT_TIMEOUT",
    "Connection",
    "Repository",
    "TimedPool",
    "create_pool",
    "postgres_ctx",
    "transaction",
]

DEFAULT_STATEMENT_TIMEOUT = 30.0
DEFAULT_ACQUIRE_TIMEOUT = 5.0
# asyncpg's own timeout comes this much after the server's: the server cancels first, cleanly
# (the connection stays usable), and the client's gives up only on a server that went silent.
_CLIENT_GRACE = 1.0

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


if TYPE_CHECKING:
    _Pool = asyncpg.Pool[asyncpg.Record]
else:
    _Pool = asyncpg.Pool  # not subscriptable at run time


class TimedPool(_Pool):
    """An asyncpg pool whose ``acquire()`` waits at most ``acquire_timeout`` seconds unless
    told otherwise (``TimeoutError`` past it); ``None``: without end, as asyncpg's."""

    __slots__ = ("acquire_timeout",)

    def __init__(self, *args: Any, acquire_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = acquire_timeout

    def acquire(
        self, *, timeout: float | None = None
    ) -> asyncpg.pool.PoolAcquireContext[asyncpg.Record]:
        """A pooled connection, waited for at most ``timeout`` (default ``acquire_timeout``)."""
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
    acquire_timeout: float | None = DEFAULT_ACQUIRE_TIMEOUT,
) -> TimedPool:
    """An asyncpg pool whose connections speak JSON through orjson, with the statement and
    acquire timeouts (seconds) of the module's docstring; ``statement_timeout=None``: the
    server's own (maintenance commands whose statements may run long)."""
    server_settings = {"application_name": "aioshop"}
    if statement_timeout is not None:
        server_settings["statement_timeout"] = str(max(1, round(statement_timeout * 1000)))
    pool = TimedPool(
        dsn,
        acquire_timeout=acquire_timeout,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        init=_init_connection,
        connection_class=_PooledConnection,
        record_class=asyncpg.Record,
        command_timeout=None if statement_timeout is None else statement_timeout + _CLIENT_GRACE,
        server_settings=server_settings,
    )
    await pool
    return pool


@asynccontextmanager
async def transaction(pool: asyncpg.Pool, **options: Any) -> AsyncIterator[Connection]:
    """Acquire a connection and run a transaction on it; commit on success, roll back on error."""
    async with pool.acquire() as conn, conn.transaction(**options):
        yield conn


def postgres_ctx(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
    acquire_timeout: float | None = DEFAULT_ACQUIRE_TIMEOUT,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` opening the pool as ``app[DB_POOL]``, with its readiness check
    (services pass ``DB_STATEMENT_TIMEOUT`` and ``DB_ACQUIRE_TIMEOUT``)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            statement_timeout=statement_timeout,
            acquire_timeout=acquire_timeout,
        )
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

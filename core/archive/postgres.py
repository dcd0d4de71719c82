"""The archive on PostgreSQL: one JSONB table keyed by event id.

The schema is created at first use, idempotently, under a transaction-level advisory lock (two
dashboards starting together do not race on ``CREATE TABLE``), and so is the database itself
when it is missing and the role may create it. Not an Alembic environment: the archive is a
library of ``core`` with two backends, whose other one (MongoDB) creates its indexes at first use
the same way, and one append-only table has no migration history to keep.

Retention is a task that deletes what is older than ``retention`` every ``purge_interval``
seconds; several instances purging together only repeat a cheap ``DELETE``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from core.archive.base import (
    ArchivePage,
    ArchiveUnavailable,
    DataFilter,
    check_query,
    cursor_after,
    page_cursor,
    unique,
)
from core.db import TimedPool, create_pool
from core.migrate import create_database
from core.retry import Backoff

__all__ = ["SCHEMA", "PostgresArchive"]

log = logging.getLogger("core.archive")

# hashtext('aioshop.event_archive') would do as well; a constant is readable in pg_locks.
_LOCK_KEY = 0x61726368  # "arch"

SCHEMA = """
CREATE TABLE IF NOT EXISTS event_archive (
    id uuid PRIMARY KEY,
    type text NOT NULL,
    occurred_at timestamptz NOT NULL,
    correlation_id text,
    envelope jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS event_archive_correlation
    ON event_archive (correlation_id, occurred_at, id);
CREATE INDEX IF NOT EXISTS event_archive_type ON event_archive (type, occurred_at, id);
CREATE INDEX IF NOT EXISTS event_archive_time ON event_archive (occurred_at, id);
CREATE INDEX IF NOT EXISTS event_archive_data
    ON event_archive USING gin ((envelope -> 'data') jsonb_path_ops);
"""

_INSERT = """
INSERT INTO event_archive (id, type, occurred_at, correlation_id, envelope)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::jsonb[])
ON CONFLICT (id) DO NOTHING
"""

# A lost connection, a server starting, stopping or full, a statement cancelled for taking too
# long: the archive is unavailable, not wrong.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionError, TimeoutError (the pool's acquire timeout) included
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,
    asyncpg.AdminShutdownError,
)


class PostgresArchive:
    """``EventArchive`` on the PostgreSQL database ``dsn`` (created if missing)."""

    def __init__(
        self,
        dsn: str,
        *,
        retention: timedelta | None = None,
        purge_interval: float = 3600.0,
        pool_max_size: int = 2,
        statement_timeout: float = 30.0,
    ) -> None:
        self.dsn = dsn
        self.retention = retention
        self.purge_interval = purge_interval
        self._pool_max_size = pool_max_size
        self._statement_timeout = statement_timeout
        self._pool: TimedPool | None = None
        self._opening = asyncio.Lock()
        self._purger: asyncio.Task[None] | None = None
        self._closed = False

    # -- the interface -----------------------------------------------------------------------

    async def store(self, envelopes: Sequence[Mapping[str, Any]]) -> int:
        """See ``EventArchive.store``."""
        items = unique(envelopes)
        if not items:
            return 0
        pool = await self._ready()
        columns = (
            [i.id for i in items],
            [i.type for i in items],
            [i.occurred_at for i in items],
            [i.correlation_id for i in items],
            [i.document for i in items],
        )
        try:
            status = await pool.execute(_INSERT, *columns)
        except _UNAVAILABLE as exc:
            raise ArchiveUnavailable(f"the archive database is unavailable: {exc!r}") from exc
        return int(status.rsplit(" ", 1)[-1])

    async def query(
        self,
        *,
        correlation_id: str | None = None,
        type: str | None = None,
        since: datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
        data: DataFilter | None = None,
    ) -> ArchivePage:
        """See ``EventArchive.query`` (a ``data`` filter is a containment, ``@>``, that the GIN
        index on ``envelope -> 'data'`` answers for any field)."""
        check_query(since, limit, data)
        where: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if correlation_id is not None:
            where.append(f"correlation_id = {arg(correlation_id)}")
        if type is not None:
            where.append(f"type = {arg(type)}")
        if since is not None:
            where.append(f"occurred_at >= {arg(since)}")
        if data:
            where.append(f"envelope -> 'data' @> {arg(dict(data))}::jsonb")
        if cursor is not None:
            at, event_id = cursor_after(cursor)
            where.append(f"(occurred_at, id) > ({arg(at)}::timestamptz, {arg(event_id)}::uuid)")
        sql = "SELECT envelope FROM event_archive"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY occurred_at, id LIMIT {arg(limit + 1)}"
        pool = await self._ready()
        try:
            rows = await pool.fetch(sql, *args)
        except _UNAVAILABLE as exc:
            raise ArchiveUnavailable(f"the archive database is unavailable: {exc!r}") from exc
        items: list[dict[str, Any]] = [row["envelope"] for row in rows[:limit]]
        more = len(rows) > limit
        return ArchivePage(items, page_cursor(items[-1]) if more else None)

    async def purge(self, older_than: datetime) -> int:
        """See ``EventArchive.purge``."""
        if older_than.tzinfo is None:
            raise ValueError("older_than must be timezone-aware")
        pool = await self._ready()
        try:
            status = await pool.execute(
                "DELETE FROM event_archive WHERE occurred_at < $1", older_than
            )
        except _UNAVAILABLE as exc:
            raise ArchiveUnavailable(f"the archive database is unavailable: {exc!r}") from exc
        return int(status.rsplit(" ", 1)[-1])

    async def close(self) -> None:
        """See ``EventArchive.close``."""
        self._closed = True
        if self._purger is not None:
            self._purger.cancel()
            await asyncio.gather(self._purger, return_exceptions=True)
            self._purger = None
        async with self._opening:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None

    # -- connection and schema ---------------------------------------------------------------

    async def _ready(self) -> TimedPool:
        """The pool, opened (database and schema made) at first use: the archive's database
        being down at start-up delays the archive, not the process that hosts it."""
        pool = self._pool
        if pool is not None:
            return pool
        async with self._opening:
            if self._closed:
                raise ArchiveUnavailable("the archive is closed")
            if self._pool is None:
                try:
                    self._pool = await self._open()
                except _UNAVAILABLE as exc:
                    raise ArchiveUnavailable(
                        f"the archive database is unavailable: {exc!r}"
                    ) from exc
                if self.retention is not None:
                    self._purger = asyncio.create_task(self._purge_forever(), name="archive:purge")
            return self._pool

    async def _open(self) -> TimedPool:
        try:
            pool = await self._create_pool()
        except asyncpg.InvalidCatalogNameError:
            try:
                if await create_database(self.dsn):
                    log.info("created the event archive's database")
            except asyncpg.UniqueViolationError:
                pass  # another instance created it at the same moment
            pool = await self._create_pool()
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
                await conn.execute(SCHEMA)
        except BaseException:
            await pool.close()
            raise
        return pool

    async def _create_pool(self) -> TimedPool:
        return await create_pool(
            self.dsn,
            min_size=1,
            max_size=self._pool_max_size,
            statement_timeout=self._statement_timeout,
        )

    async def _purge_forever(self) -> None:
        assert self.retention is not None
        backoff = Backoff(base=1.0, cap=60.0)
        while True:
            try:
                deleted = await self.purge(datetime.now(UTC) - self.retention)
            except ArchiveUnavailable as exc:
                log.warning("archive purge failed (%s): retrying", exc)
                await backoff.wait()
                continue
            except Exception:  # a bug must not end retention for the life of the process
                log.exception("archive purge failed: retrying")
                await backoff.wait()
                continue
            backoff.reset()
            if deleted:
                log.info("archive purge: %d envelopes older than %s", deleted, self.retention)
            await asyncio.sleep(self.purge_interval)  # the retention period's tick, not a wait

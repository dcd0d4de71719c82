"""The archive on MongoDB through PyMongo's ``AsyncMongoClient`` (motor is end of life).

One document per envelope: ``_id`` is the event id, ``envelope`` the envelope as on the bus,
``occurred_at`` its time as a BSON date (millisecond precision: what the TTL index expires by)
and ``at_us`` the same time in microseconds since the epoch (what pages sort by, so that the
order is the PostgreSQL backend's to the microsecond). Indexes on correlation id, type and
time, on each field of ``data`` named in ``data_indexes`` (other fields can be queried, by a
scan), created at first use (``create_index`` is idempotent), and a TTL index for retention.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, ConnectionFailure, OperationFailure

from core.archive.base import (
    ArchivePage,
    ArchiveUnavailable,
    DataFilter,
    check_data_fields,
    check_query,
    cursor_after,
    page_cursor,
    unique,
)

__all__ = ["DEFAULT_DATABASE", "MongoArchive"]

log = logging.getLogger("core.archive")

DEFAULT_DATABASE = "aioshop_archive"
_DUPLICATE_KEY = 11000
_INDEX_OPTIONS_CONFLICT = 85
_TTL_INDEX = "archive_ttl"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Document = dict[str, Any]


def _micros(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(microseconds=1)


class MongoArchive:
    """``EventArchive`` in the collection ``collection`` of ``database`` (default: the URL's
    database, else ``aioshop_archive``) on the MongoDB at ``url``; ``data_indexes``: the fields
    of envelopes' ``data`` that ``query(data=...)`` finds by an index."""

    def __init__(
        self,
        url: str,
        *,
        database: str | None = None,
        collection: str = "events",
        retention: timedelta | None = None,
        timeout: float = 5.0,
        data_indexes: Iterable[str] = ("order_id",),
    ) -> None:
        self.retention = retention
        self.data_indexes = check_data_fields(data_indexes)
        self._client: AsyncMongoClient[Document] = AsyncMongoClient(
            url,
            tz_aware=True,
            serverSelectionTimeoutMS=int(timeout * 1000),
            connectTimeoutMS=int(timeout * 1000),
            appname="aioshop-archive",
        )
        db = self._client.get_default_database(default=database or DEFAULT_DATABASE)
        if database is not None:
            db = self._client[database]
        self._events: AsyncCollection[Document] = db[collection]
        self._indexed = False
        self._indexing = asyncio.Lock()

    # -- the interface -----------------------------------------------------------------------

    async def store(self, envelopes: Sequence[Mapping[str, Any]]) -> int:
        """See ``EventArchive.store``."""
        items = unique(envelopes)
        if not items:
            return 0
        documents = [
            {
                "_id": str(item.id),
                "type": item.type,
                "correlation_id": item.correlation_id,
                "occurred_at": item.occurred_at,
                "at_us": _micros(item.occurred_at),
                "envelope": item.document,
            }
            for item in items
        ]
        events = await self._ready()
        try:
            result = await events.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(error.get("code") != _DUPLICATE_KEY for error in errors):
                raise
            inserted: int = exc.details.get("nInserted", 0)
            return inserted
        except ConnectionFailure as exc:
            raise ArchiveUnavailable(f"the archive database is unavailable: {exc!r}") from exc
        return len(result.inserted_ids)

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
        """See ``EventArchive.query``."""
        check_query(since, limit, data)
        where: list[Document] = []
        if correlation_id is not None:
            where.append({"correlation_id": correlation_id})
        if type is not None:
            where.append({"type": type})
        if since is not None:
            where.append({"at_us": {"$gte": _micros(since)}})
        for name, value in (data or {}).items():
            # Equality of BSON values, which, like JSONB's, keeps 1, "1" and true apart.
            where.append({f"envelope.data.{name}": value})
        if cursor is not None:
            at, event_id = cursor_after(cursor)
            at_us = _micros(at)
            where.append(
                {
                    "$or": [
                        {"at_us": {"$gt": at_us}},
                        {"at_us": at_us, "_id": {"$gt": str(event_id)}},
                    ]
                }
            )
        selector: Document = {"$and": where} if where else {}
        events = await self._ready()
        try:
            found = events.find(selector, {"envelope": 1}).sort(
                [("at_us", ASCENDING), ("_id", ASCENDING)]
            )
            documents = await found.limit(limit + 1).to_list()
        except ConnectionFailure as exc:
            raise ArchiveUnavailable(f"the archive database is unavailable: {exc!r}") from exc
        items: list[dict[str, Any]] = [document["envelope"] for document in documents[:limit]]
        more = len(documents) > limit
        return ArchivePage(items, page_cursor(items[-1]) if more else None)

    async def purge(self, older_than: datetime) -> int:
        """See ``EventArchive.purge`` (the TTL index does it by itself with a retention)."""
        if older_than.tzinfo is None:
            raise ValueError("older_than must be timezone-aware")
        events = await self._ready()
        try:
            result = await events.delete_many({"at_us": {"$lt": _micros(older_than)}})
        except ConnectionFailure as exc:
            raise ArchiveUnavailable(f"the archive database is unavailable: {exc!r}") from exc
        return result.deleted_count

    async def close(self) -> None:
        """See ``EventArchive.close``."""
        await self._client.close()

    async def drop(self) -> None:
        """Drop the archive's database (tests)."""
        await self._client.drop_database(self._events.database.name)

    # -- indexes -----------------------------------------------------------------------------

    async def _ready(self) -> AsyncCollection[Document]:
        if self._indexed:
            return self._events
        async with self._indexing:
            if not self._indexed:
                try:
                    await self._create_indexes()
                except ConnectionFailure as exc:
                    raise ArchiveUnavailable(
                        f"the archive database is unavailable: {exc!r}"
                    ) from exc
                self._indexed = True
        return self._events

    async def _create_indexes(self) -> None:
        events = self._events
        await events.create_index([("correlation_id", ASCENDING), ("at_us", ASCENDING)])
        await events.create_index([("type", ASCENDING), ("at_us", ASCENDING)])
        await events.create_index([("at_us", ASCENDING), ("_id", ASCENDING)])
        for name in self.data_indexes:
            await events.create_index([(f"envelope.data.{name}", ASCENDING), ("at_us", ASCENDING)])
        if self.retention is None:
            return
        seconds = int(self.retention.total_seconds())
        try:
            await events.create_index(
                [("occurred_at", ASCENDING)], name=_TTL_INDEX, expireAfterSeconds=seconds
            )
        except OperationFailure as exc:
            if exc.code != _INDEX_OPTIONS_CONFLICT:
                raise
            # The retention changed since the index was made: change the index in place.
            await events.database.command(
                "collMod",
                events.name,
                index={"name": _TTL_INDEX, "expireAfterSeconds": seconds},
            )
            log.info("event archive retention set to %d s", seconds)

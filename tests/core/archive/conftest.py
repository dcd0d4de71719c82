"""Fixtures of the archive's tests: an archive per backend on an isolated database, and
envelopes to store."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.archive import EventArchive, MongoArchive, PostgresArchive
from core.bus import Envelope
from core.migrate import drop_database
from core.testing.plugin import scratch_database_url

MONGO_SKIP = "MongoDB cannot be installed on this machine; set MONGODB_URL to run"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def envelope(
    event_type: str = "order.placed",
    *,
    at: datetime = T0,
    correlation_id: str | None = None,
    **data: Any,
) -> dict[str, Any]:
    """An envelope as the bus carries it (JSON form)."""
    return Envelope(
        type=event_type,
        occurred_at=at,
        correlation_id=correlation_id or uuid.uuid4().hex,
        causation_id=None,
        source="test",
        data=data or {"n": 1},
    ).model_dump(mode="json")


def at(seconds: float) -> datetime:
    """``T0`` plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


@asynccontextmanager
async def postgres_archive(**options: Any) -> AsyncIterator[PostgresArchive]:
    """A PostgreSQL archive on a database of its own (created by the archive at first use),
    dropped at the end."""
    dsn = scratch_database_url(f"test_archive_{uuid.uuid4().hex[:8]}")
    archive = PostgresArchive(dsn, pool_max_size=2, **options)
    try:
        yield archive
    finally:
        await archive.close()
        await drop_database(dsn)


@pytest.fixture(scope="session")
def archive_dsn() -> Iterator[str]:
    """The database of this session's PostgreSQL contract tests (made by the archive)."""
    dsn = scratch_database_url(f"test_archive_{uuid.uuid4().hex[:8]}")
    yield dsn
    asyncio.run(drop_database(dsn))


@pytest.fixture(params=["postgresql", "mongodb"])
async def archive(request: pytest.FixtureRequest, archive_dsn: str) -> AsyncIterator[EventArchive]:
    """Each backend that can run here, on an isolated database, empty."""
    if request.param == "postgresql":
        archive = PostgresArchive(archive_dsn, pool_max_size=2)
        try:
            await archive.purge(datetime.max.replace(tzinfo=UTC))  # what a former test left
            yield archive
        finally:
            await archive.close()
        return
    url = os.environ.get("MONGODB_URL")
    if not url:
        pytest.skip(MONGO_SKIP)
    mongo = MongoArchive(url, database=f"test_archive_{uuid.uuid4().hex[:8]}")
    try:
        yield mongo
    finally:
        await mongo.drop()
        await mongo.close()

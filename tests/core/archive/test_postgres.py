"""What only the PostgreSQL backend does: make its database and schema, concurrently, at first
use; say ``ArchiveUnavailable`` for a server it cannot reach; purge by itself."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from core.archive import ArchiveSettings, ArchiveUnavailable, PostgresArchive, open_archive
from core.archive.mongo import MongoArchive
from core.testing import free_port, wait_for
from tests.core.archive.conftest import envelope, postgres_archive


async def test_instances_starting_together_make_the_database_and_schema_once() -> None:
    async with postgres_archive() as first:
        second = PostgresArchive(first.dsn, pool_max_size=1)
        try:
            counts = await asyncio.gather(
                first.store([envelope()]), second.store([envelope()]), second.query()
            )
            assert list(counts[:2]) == [1, 1]
        finally:
            await second.close()
        conn = await asyncpg.connect(first.dsn)
        try:
            indexes = await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'event_archive'"
            )
        finally:
            await conn.close()
        assert {r["indexname"] for r in indexes} >= {
            "event_archive_pkey",
            "event_archive_correlation",
            "event_archive_type",
            "event_archive_time",
            "event_archive_data",
        }


async def test_an_unreachable_server_is_unavailable_not_an_error() -> None:
    archive = PostgresArchive(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    try:
        with pytest.raises(ArchiveUnavailable):
            await archive.store([envelope()])
        with pytest.raises(ArchiveUnavailable):
            await archive.query()
    finally:
        await archive.close()


async def test_the_retention_task_purges_what_is_older() -> None:
    old = envelope(at=datetime.now(UTC) - timedelta(days=8))
    fresh = envelope(at=datetime.now(UTC))
    async with postgres_archive(retention=timedelta(days=7), purge_interval=0.05) as archive:
        await archive.store([old, fresh])  # opens the archive, which starts the purge task

        async def purged() -> bool:
            return [e["id"] for e in (await archive.query()).items] == [fresh["id"]]

        await wait_for(purged, within=10)


def test_the_settings_pick_the_backend() -> None:
    settings = ArchiveSettings(_env_file=None, archive_database_url="postgresql://h/db")
    assert isinstance(open_archive(settings), PostgresArchive)
    assert settings.archive_queue_name == "aioshop.events.archive"
    assert settings.archive_exclude_types == ["metrics.snapshot"]
    assert settings.archive_retention == timedelta(days=7)
    mongo = ArchiveSettings(_env_file=None, mongodb_url="mongodb://127.0.0.1:1/x")
    on_mongo = open_archive(mongo)
    assert isinstance(on_mongo, MongoArchive)
    assert on_mongo.data_indexes == ("order_id",)


def test_the_archive_is_off_on_the_in_memory_bus_unless_a_database_is_named() -> None:
    memory = ArchiveSettings(_env_file=None, bus_transport="memory")
    assert not memory.archive_is_enabled
    named = ArchiveSettings(
        _env_file=None, bus_transport="memory", archive_database_url="postgresql://h/db"
    )
    assert named.archive_is_enabled
    assert ArchiveSettings(_env_file=None).archive_is_enabled
    forced_off = ArchiveSettings(_env_file=None, archive_enabled=False)
    assert not forced_off.archive_is_enabled


async def test_a_data_filter_is_answered_by_the_gin_index() -> None:
    async with postgres_archive() as archive:
        await archive.store([envelope(order_id=f"o-{n}") for n in range(20)])
        (found,) = (await archive.query(data={"order_id": "o-7"})).items
        assert found["data"] == {"order_id": "o-7"}
        conn = await asyncpg.connect(archive.dsn)
        try:
            await conn.execute("SET enable_seqscan = off")  # 20 rows: a scan would be cheaper
            plan = await conn.fetch(
                "EXPLAIN SELECT envelope FROM event_archive "
                """WHERE envelope -> 'data' @> '{"order_id": "o-7"}'::jsonb"""
            )
        finally:
            await conn.close()
        assert "event_archive_data" in "\n".join(row[0] for row in plan)

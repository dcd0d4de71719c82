"""``open_archive(settings)``: the backend the settings name."""

from __future__ import annotations

from core.archive.base import EventArchive
from core.archive.mongo import MongoArchive
from core.archive.postgres import PostgresArchive
from core.archive.settings import ArchiveSettings

__all__ = ["backend_name", "open_archive"]


def backend_name(settings: ArchiveSettings) -> str:
    """``mongodb`` when ``MONGODB_URL`` is set, else ``postgresql``."""
    return "mongodb" if settings.mongodb_url else "postgresql"


def open_archive(settings: ArchiveSettings) -> EventArchive:
    """The archive on MongoDB when ``settings.mongodb_url`` is set, else on PostgreSQL.

    Nothing is connected yet: each backend connects (and makes its schema or indexes) at first
    use, so a database that is down delays the archive, not the process hosting it.
    """
    if settings.mongodb_url:
        return MongoArchive(
            settings.mongodb_url,
            database=settings.archive_mongodb_database,
            retention=settings.archive_retention,
            data_indexes=settings.archive_data_indexes,
        )
    return PostgresArchive(
        settings.archive_database_url,
        retention=settings.archive_retention,
        purge_interval=settings.archive_purge_interval,
        pool_max_size=settings.archive_pool_max_size,
        statement_timeout=settings.db_statement_timeout,
    )

"""The event archive: every envelope that crossed the bus, queryable by correlation id, type
and time, kept for a retention period.

``EventArchive`` is the interface (``store``, ``query``, ``purge``, ``close``) with two backends,
``PostgresArchive`` (a JSONB table) and ``MongoArchive`` (PyMongo's ``AsyncMongoClient``, a TTL
index for retention); ``open_archive(settings)`` picks MongoDB when ``MONGODB_URL`` is set and
PostgreSQL otherwise. ``ArchiveSubscriber`` fills it from a durable queue of the bus.
"""

from core.archive.base import (
    MAX_LIMIT,
    ArchivePage,
    ArchiveUnavailable,
    EventArchive,
    InvalidCursor,
)
from core.archive.factory import backend_name, open_archive
from core.archive.mongo import MongoArchive
from core.archive.postgres import PostgresArchive
from core.archive.settings import ArchiveSettings
from core.archive.subscriber import ArchiveSubscriber

__all__ = [
    "MAX_LIMIT",
    "ArchivePage",
    "ArchiveSettings",
    "ArchiveSubscriber",
    "ArchiveUnavailable",
    "EventArchive",
    "InvalidCursor",
    "MongoArchive",
    "PostgresArchive",
    "backend_name",
    "open_archive",
]

"""Settings of the event archive, for the process that hosts it (the dashboard)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import AliasChoices, Field

from core.settings import BaseServiceSettings, database_url

__all__ = ["ArchiveSettings"]


class ArchiveSettings(BaseServiceSettings):
    """Where the archive lives and what it keeps.

    - ``MONGODB_URL`` set: the archive is on MongoDB (database ``ARCHIVE_MONGODB_DATABASE``,
      default the URL's, else ``aioshop_archive``); unset, on PostgreSQL at
      ``ARCHIVE_DATABASE_URL`` (default the database ``aioshop_archive`` on the local server,
      created at first use when missing);
    - ``archive_enabled``: unset, the archive runs when the bus is RabbitMQ, or when
      ``ARCHIVE_DATABASE_URL`` or ``MONGODB_URL`` is set explicitly (the single-process mode's
      in-memory bus has no local server to archive to);
    - ``archive_retention``: how long an envelope is kept (seconds or ISO 8601, ``P7D``);
      ``archive_purge_interval``: seconds between two purges (PostgreSQL; MongoDB's TTL index
      expires by itself);
    - ``archive_exclude_types``: event types (topic patterns) not archived, by default
      ``metrics.snapshot`` (a telemetry event a second per instance that would dominate it);
    - ``archive_queue``: the durable queue of the subscriber (default ``<BUS_EXCHANGE>.archive``),
      shared by every dashboard instance; ``archive_batch_size`` envelopes at most per write,
      waiting at most ``archive_batch_delay`` seconds for a batch to fill;
    - ``archive_data_indexes``: the fields of envelopes' ``data`` that MongoDB indexes for
      ``query(data=...)``, by default ``order_id`` (PostgreSQL's one GIN index covers every
      field).
    """

    archive_enabled: bool | None = None
    archive_database_url: str = Field(
        default=database_url("aioshop_archive"),
        validation_alias=AliasChoices("ARCHIVE_DATABASE_URL", "archive_database_url"),
    )
    archive_mongodb_database: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,63}$")
    archive_retention: timedelta = Field(
        default=timedelta(days=7), ge=timedelta(minutes=1), le=timedelta(days=3650)
    )
    archive_purge_interval: float = Field(default=3600.0, gt=0, le=86_400)
    archive_exclude_types: list[str] = Field(
        default_factory=lambda: ["metrics.snapshot"], max_length=100
    )
    archive_queue: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,200}$")
    archive_batch_size: int = Field(default=200, ge=1, le=5000)
    archive_batch_delay: float = Field(default=0.05, ge=0, le=10)
    archive_pool_max_size: int = Field(default=2, ge=1, le=20)
    archive_data_indexes: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]] = (
        Field(default_factory=lambda: ["order_id"], max_length=20)
    )

    @property
    def archive_is_enabled(self) -> bool:
        """Whether the archive runs (see ``archive_enabled``)."""
        if self.archive_enabled is not None:
            return self.archive_enabled
        explicit = {"archive_database_url", "mongodb_url"} & self.model_fields_set
        return self.bus_transport == "amqp" or bool(explicit)

    @property
    def archive_queue_name(self) -> str:
        """The subscriber's durable queue."""
        return self.archive_queue or f"{self.bus_exchange}.archive"

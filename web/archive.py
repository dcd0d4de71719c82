"""The event archive in the dashboard (the operator's plane): the subscriber that fills it and
``GET /api/v1/admin/events`` that reads it.

``archive_ctx(settings)`` goes among the dashboard's resources after ``bus_ctx`` and before
``bus_workers_ctx``: it opens the archive (``core.archive.open_archive``: MongoDB when
``MONGODB_URL`` is set, PostgreSQL otherwise), binds the durable archive queue to every event
type and sets ``app[ARCHIVE]``. When the archive is disabled (the single-process mode's in-memory
bus with no archive database set: see ``ArchiveSettings.archive_enabled``) it says so in the log
and ``app.get(ARCHIVE)`` is ``None``.

The archive is closed to anonymous callers in every environment, development included (unlike
the dashboard's live data): it holds events' personal data, such as the email of every
registration. Reading it needs ``metrics:read`` (admins hold it).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from aiohttp import web
from prometheus_client import Counter
from pydantic import AwareDatetime, Field

from core import BUS, METRICS
from core.app import CleanupCtx
from core.archive import (
    ArchiveSettings,
    ArchiveSubscriber,
    EventArchive,
    backend_name,
    open_archive,
)
from core.errors import ServiceUnavailable
from core.handlers import Query, Router
from core.pagination import Cursor, Limit
from core.schemas import OutputModel, Page
from web.settings import METRICS_READ

__all__ = ["ARCHIVE", "ArchivedEvent", "archive_ctx", "archive_router", "list_archived_events"]

log = logging.getLogger("web.archive")

ARCHIVE = web.AppKey("archive", EventArchive)

archive_router = Router(tags=["archive"])

_Text = Annotated[str | None, Field(min_length=1, max_length=255)]


class ArchivedEvent(OutputModel):
    """An envelope as it crossed the bus (API.md "Bus events")."""

    id: uuid.UUID
    type: str
    version: int
    occurred_at: datetime
    correlation_id: str | None = None
    causation_id: str | None = None
    source: str
    data: dict[str, Any]


@archive_router.get(
    "/api/v1/admin/events",
    response=Page[ArchivedEvent],
    permissions={METRICS_READ},
    responses={503: "The archive is disabled on this instance, or its database is down"},
)
async def list_archived_events(
    request: web.Request,
    correlation_id: Annotated[_Text, Query(description="Only this correlation id")] = None,
    type: Annotated[_Text, Query(description="Only this event type")] = None,
    since: Annotated[
        AwareDatetime | None, Query(description="Only events at or after this time")
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[ArchivedEvent]:
    """Every envelope that crossed the bus, oldest first (``metrics:read``)."""
    archive = request.app.get(ARCHIVE)
    if archive is None:
        raise ServiceUnavailable("The event archive is not enabled on this instance")
    page = await archive.query(
        correlation_id=correlation_id, type=type, since=since, cursor=cursor, limit=limit
    )
    return Page[ArchivedEvent](
        items=[ArchivedEvent.model_validate(item) for item in page.items],
        next_cursor=page.next_cursor,
    )


def archive_ctx(settings: ArchiveSettings) -> CleanupCtx:
    """Open the archive and its subscriber for the app's life (see the module docstring)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if not settings.archive_is_enabled:
            log.info(
                "event archive disabled: the bus is in memory and neither ARCHIVE_DATABASE_URL "
                "nor MONGODB_URL is set (ARCHIVE_ENABLED=true turns it on)"
            )
            yield
            return
        stored = Counter(
            "archive_envelopes_stored",
            "Envelopes written to the event archive, by whether they were new",
            ["outcome"],
            registry=app[METRICS].registry,
        )

        def count(total: int, new: int) -> None:
            stored.labels("new").inc(new)
            stored.labels("duplicate").inc(total - new)

        archive = open_archive(settings)
        subscriber = ArchiveSubscriber(
            archive,
            exclude=settings.archive_exclude_types,
            batch_size=settings.archive_batch_size,
            batch_delay=settings.archive_batch_delay,
            on_stored=count,
        )
        queue = settings.archive_queue_name
        subscriber.subscribe(app[BUS], queue=queue)
        subscriber.start()
        app[ARCHIVE] = archive
        log.info(
            "event archive on %s (queue %s, retention %s, excluding %s)",
            backend_name(settings),
            queue,
            settings.archive_retention,
            ", ".join(settings.archive_exclude_types) or "nothing",
        )
        try:
            yield
        finally:
            await subscriber.stop()
            await archive.close()

    return ctx

"""The archive's interface, its page, its errors, and what both backends share: the canonical
form of an envelope and the keyset cursor over ``(occurred_at, id)``."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from core.bus.events import Envelope
from core.pagination import InvalidCursor, decode_cursor, encode_cursor

__all__ = [
    "MAX_LIMIT",
    "ArchivePage",
    "ArchiveUnavailable",
    "ArchivedEnvelope",
    "DataFilter",
    "EventArchive",
    "InvalidCursor",
    "archived",
    "check_data_fields",
    "check_query",
    "cursor_after",
    "page_cursor",
    "unique",
]

MAX_LIMIT = 1000

DataFilter = Mapping[str, str | int | bool]
"""Top-level fields of an envelope's ``data`` and the JSON scalar each must equal."""

_DATA_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class ArchiveUnavailable(ConnectionError):
    """The archive's database cannot be reached right now: try again later (a 503 over HTTP,
    a retry in place for the subscriber)."""


@dataclass(slots=True)
class ArchivePage:
    """One page of a query: envelopes oldest first by ``(occurred_at, id)``, and the opaque
    cursor of the next page (``None`` on the last one)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str | None = None


@runtime_checkable
class EventArchive(Protocol):
    """Every envelope that crossed the bus, kept for a retention period."""

    async def store(self, envelopes: Sequence[Mapping[str, Any]]) -> int:
        """Keep ``envelopes`` (dicts as on the bus); return how many were new. Idempotent by
        event id: storing one again changes nothing. ``ValueError`` for one that is not an
        envelope, ``ArchiveUnavailable`` when the database cannot be reached."""
        ...

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
        """The envelopes matching every filter given (``since``: ``occurred_at >= since``,
        timezone-aware; ``data``: each named top-level field of the envelope's ``data`` equals
        its value, type included, so ``{"n": 1}`` does not match ``"1"``), oldest first, at
        most ``limit`` (1 to ``MAX_LIMIT``), after ``cursor`` (a ``next_cursor`` of an earlier
        page; ``InvalidCursor`` otherwise)."""
        ...

    async def purge(self, older_than: datetime) -> int:
        """Delete every envelope that occurred before ``older_than``; return how many."""
        ...

    async def close(self) -> None:
        """Release the connections (and stop the retention task, if any)."""
        ...


@dataclass(frozen=True, slots=True)
class ArchivedEnvelope:
    """An envelope in the archive's canonical form: its JSON dict plus the keys it is indexed
    and sorted by."""

    id: uuid.UUID
    type: str
    occurred_at: datetime
    correlation_id: str | None
    document: dict[str, Any]


def archived(envelope: Mapping[str, Any] | Envelope) -> ArchivedEnvelope:
    """Validate one envelope and put it in canonical form (``ValueError`` if it is not one)."""
    if not isinstance(envelope, Envelope):
        envelope = Envelope.model_validate(dict(envelope))
    occurred_at = envelope.occurred_at
    if occurred_at.tzinfo is None:
        raise ValueError(f"envelope {envelope.id}: occurred_at has no time zone")
    return ArchivedEnvelope(
        id=envelope.id,
        type=envelope.type,
        occurred_at=occurred_at.astimezone(UTC),
        correlation_id=envelope.correlation_id,
        document=envelope.model_dump(mode="json"),
    )


def unique(envelopes: Sequence[Mapping[str, Any]]) -> list[ArchivedEnvelope]:
    """Every envelope of ``envelopes`` in canonical form, each event id once."""
    seen: dict[uuid.UUID, ArchivedEnvelope] = {}
    for envelope in envelopes:
        item = archived(envelope)
        seen.setdefault(item.id, item)
    return list(seen.values())


def check_query(since: datetime | None, limit: int, data: DataFilter | None = None) -> None:
    """``ValueError`` for a naive ``since``, a ``limit`` out of range, or a ``data`` filter
    whose field is not a plain name (letters, digits, ``_``: no path, no operator) or whose
    value is not a string, an integer or a boolean."""
    if since is not None and since.tzinfo is None:
        raise ValueError("since must be timezone-aware")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    check_data_fields(data or {})
    for name, value in (data or {}).items():
        if not isinstance(value, str | int | bool):
            raise ValueError(f"data filter: the value of {name} is not a string or an integer")


def check_data_fields(names: Iterable[str]) -> tuple[str, ...]:
    """``names``, each a plain field name of ``data`` (letters, digits, ``_``: no path, no
    operator); ``ValueError`` otherwise."""
    fields = tuple(names)
    for name in fields:
        if not isinstance(name, str) or not _DATA_FIELD.fullmatch(name):
            raise ValueError(f"data filter: {name!r} is not a field name")
    return fields


def page_cursor(document: Mapping[str, Any]) -> str:
    """The cursor that continues after ``document`` (an archived envelope)."""
    return encode_cursor(str(document["occurred_at"]), str(document["id"]))


def cursor_after(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The ``(occurred_at, id)`` a cursor continues after (``InvalidCursor`` if it was not made
    by ``page_cursor``)."""
    at, event_id = decode_cursor(cursor, 2)
    try:
        when = datetime.fromisoformat(at)
        key = uuid.UUID(event_id)
    except (TypeError, ValueError):
        raise InvalidCursor() from None
    if when.tzinfo is None:
        raise InvalidCursor()
    return when.astimezone(UTC), key

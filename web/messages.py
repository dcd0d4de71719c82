"""What the dashboard accepts from the bus: bounded pydantic models of every message it reads.

A message is validated before it reaches the state (``DashboardState.apply``): one that does not
fit (a wrong type, a string or a list too long, a number that is not finite or out of range) is
dropped and counted, never stored, so that nothing malformed can break the view afterwards.

Snapshots are read with the publisher's own bounded figure models (``core.snapshot``); events
only in the fields the dashboard reads, the others are ignored (a newer version of an event is
still shown for what the dashboard understands of it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from core.bus import Envelope
from core.snapshot.events import (
    MAX_COUNT,
    MAX_FIGURE,
    BusFigures,
    CacheTierFigures,
    ErrorFigures,
    ProcessFigures,
    RequestFigures,
)

__all__ = ["EnvelopeIn", "EventIn", "SnapshotIn", "validate_envelope"]

Key = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=1000)]
Figure = (
    Annotated[int, Field(ge=-MAX_COUNT, le=MAX_COUNT)]
    | Annotated[float, Field(ge=-MAX_FIGURE, le=MAX_FIGURE, allow_inf_nan=False)]
)
FigureValue = (
    Figure
    | Annotated[str, StringConstraints(max_length=200)]
    | Annotated[dict[Key, Figure], Field(max_length=32)]
)


class _In(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class SnapshotIn(_In):
    """The ``data`` of a ``metrics.snapshot`` (``core.snapshot.MetricsSnapshot``), bounded."""

    service: Key
    instance: Name
    host: Annotated[str, StringConstraints(max_length=255)]
    started_at: datetime
    at: datetime
    interval: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)]
    requests: RequestFigures
    errors: ErrorFigures
    process: ProcessFigures
    cache: Annotated[dict[Key, CacheTierFigures], Field(max_length=16)] = {}
    bus: BusFigures | None = None
    business: Annotated[dict[Key, FigureValue], Field(max_length=32)] = {}


class EventIn(_In):
    """The fields of an event's ``data`` that the dashboard reads (sagas and summaries)."""

    order_id: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    product_id: Annotated[str, StringConstraints(max_length=100)] | None = None
    status: Annotated[str, StringConstraints(max_length=64)] | None = None
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None
    total_cents: Annotated[int, Field(ge=0, le=MAX_COUNT)] | None = None
    amount_cents: Annotated[int, Field(ge=0, le=MAX_COUNT)] | None = None
    currency: Annotated[str, StringConstraints(min_length=1, max_length=8)] | None = None
    email: Annotated[str, StringConstraints(max_length=320)] | None = None
    name: Text | None = None
    sku: Annotated[str, StringConstraints(max_length=200)] | None = None
    available: Annotated[int, Field(ge=-MAX_COUNT, le=MAX_COUNT)] | None = None


class EnvelopeIn(_In):
    """The envelope fields the dashboard shows, bounded (``Envelope`` leaves them open)."""

    source: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    correlation_id: Annotated[str, StringConstraints(max_length=200)] | None = None


def validate_envelope(envelope: Envelope) -> dict[str, Any]:
    """The envelope's ``data`` validated (and normalised, as JSON) or ``ValidationError``."""
    EnvelopeIn.model_validate(
        {"source": envelope.source, "correlation_id": envelope.correlation_id}
    )
    if envelope.type == "metrics.snapshot":
        return SnapshotIn.model_validate(envelope.data).model_dump(mode="json")
    EventIn.model_validate(envelope.data)
    return envelope.data

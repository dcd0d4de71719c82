"""Events and their envelope (API.md "Bus events").

An event type is a pydantic model with a name and a version::

    class UserRegistered(Event):
        event_type = "user.registered"
        event_version = 1

        user_id: UUID
        email: str

Every published event travels in an ``Envelope`` carrying its id, type, version, time, the
correlation id of the request (or message) that caused it, the id of that causing message, and
the publishing service.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, Field

from core.context import causation_id as current_causation
from core.context import get_correlation_id

__all__ = ["Envelope", "Event", "event_types"]

_REGISTRY: dict[tuple[str, int], type[Event]] = {}


class Event(BaseModel):
    """Base of event payloads; subclasses set ``event_type`` and ``event_version``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    event_version: ClassVar[int] = 1

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "event_type" in cls.__dict__:
            _REGISTRY[(cls.event_type, cls.event_version)] = cls


def event_types() -> dict[tuple[str, int], type[Event]]:
    """Every declared event class by ``(type, version)``."""
    return dict(_REGISTRY)


class Envelope(BaseModel):
    """What travels on the bus: metadata around an event's ``data``."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str = Field(min_length=1, max_length=255)
    version: int = Field(default=1, ge=1)
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    correlation_id: str | None = None
    causation_id: str | None = None
    source: str
    data: dict[str, Any]

    @classmethod
    def wrap(
        cls,
        event: Event,
        *,
        source: str,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> Envelope:
        """Put ``event`` in an envelope; correlation and causation default to the context's."""
        return cls(
            type=event.event_type,
            version=event.event_version,
            correlation_id=correlation_id or get_correlation_id(),
            causation_id=causation_id or current_causation.get(),
            source=source,
            data=event.model_dump(mode="json"),
        )

    def to_bytes(self) -> bytes:
        """The JSON wire form."""
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, body: bytes) -> Envelope:
        """Parse the wire form (raises ``ValueError`` on anything that is not an envelope)."""
        return cls.model_validate_json(body)

    def event(self) -> Event | None:
        """The ``data`` validated against its declared event class (None if none is declared)."""
        event_cls = _REGISTRY.get((self.type, self.version))
        return event_cls.model_validate(self.data) if event_cls is not None else None

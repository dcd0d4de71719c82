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

Which class an envelope's ``(type, version)`` means is a property of a bus, not of the process:
each ``Bus`` keeps an ``EventRegistry`` of what it publishes and consumes, and two different
classes for one ``(type, version)`` on one bus are refused when the second is registered
(``EventConflict``). An event's contract is declared once, in its publisher's ``events``
module, and its consumers import that module.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from core.context import causation_id as current_causation
from core.context import get_correlation_id

__all__ = ["Envelope", "Event", "EventConflict", "EventRegistry", "Role", "new_event_id"]

Role = Literal["publishes", "consumes"]


class Event(BaseModel):
    """Base of event payloads; subclasses set ``event_type`` and ``event_version``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    event_version: ClassVar[int] = 1

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        version = cls.__dict__.get("event_version", cls.event_version)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise TypeError(f"{cls.__qualname__}.event_version must be an int >= 1")

    @classmethod
    def key(cls) -> tuple[str, int]:
        """``(event_type, event_version)``: what an envelope names this class by."""
        return cls.event_type, cls.event_version


class EventConflict(ValueError):
    """Two different classes registered for one ``(type, version)`` on one bus."""


class EventRegistry:
    """The event classes one bus knows, by ``(type, version)``, and what it does with each.

    Registering a class again is harmless; registering another class under a taken
    ``(type, version)`` raises ``EventConflict`` at once, so a wiring mistake stops the start-up
    instead of silently changing how envelopes are read.
    """

    def __init__(self) -> None:
        self._classes: dict[tuple[str, int], type[Event]] = {}
        self._roles: dict[Role, dict[type[Event], None]] = {"publishes": {}, "consumes": {}}

    def register(self, event_cls: type[Event], role: Role) -> None:
        """Record that the bus ``role``-s (publishes or consumes) ``event_cls``."""
        if not hasattr(event_cls, "event_type"):
            raise TypeError(f"{event_cls.__qualname__} declares no event_type")
        key = event_cls.key()
        known = self._classes.setdefault(key, event_cls)
        if known is not event_cls:
            raise EventConflict(
                f"{key[0]} v{key[1]} is already {_qualified(known)}, "
                f"not {_qualified(event_cls)}: declare an event once, in its publisher's "
                "events module, and import it"
            )
        self._roles[role][event_cls] = None

    def register_all(self, events: Iterable[type[Event]], role: Role) -> None:
        """``register`` each of ``events``."""
        for event_cls in events:
            self.register(event_cls, role)

    def get(self, event_type: str, version: int) -> type[Event] | None:
        """The class registered for ``(event_type, version)``, if any."""
        return self._classes.get((event_type, version))

    def resolve(self, envelope: Envelope) -> Event | None:
        """``envelope.data`` validated against its class (``None`` if the bus knows none).

        Raises ``pydantic.ValidationError`` when the data does not fit the class.
        """
        event_cls = self._classes.get((envelope.type, envelope.version))
        if event_cls is None:
            return None
        return event_cls.__pydantic_validator__.validate_python(envelope.data)  # type: ignore[no-any-return]

    @property
    def published(self) -> tuple[type[Event], ...]:
        """The classes the bus publishes, in registration order."""
        return tuple(self._roles["publishes"])

    @property
    def consumed(self) -> tuple[type[Event], ...]:
        """The classes the bus consumes, in registration order."""
        return tuple(self._roles["consumes"])

    def __iter__(self) -> Iterator[type[Event]]:
        return iter(self._classes.values())

    def __len__(self) -> int:
        return len(self._classes)

    def __contains__(self, event_cls: object) -> bool:
        if not (isinstance(event_cls, type) and issubclass(event_cls, Event)):
            return False
        return self._classes.get(event_cls.key()) is event_cls


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


_CLEAR_VERSION = ~(0xC000 << 48 | 0xF000 << 64)
_SET = 0x8000 << 48 | 0x4000 << 64  # RFC 4122 variant, version 4
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown


def new_event_id() -> uuid.UUID:
    """A random (version 4) UUID from ``os.urandom``, as ``uuid.uuid4()`` makes one, without
    the argument checks of ``UUID.__init__``."""
    event_id = uuid.UUID.__new__(uuid.UUID)
    # UUID is immutable: its own __init__ sets its slots this way.
    object.__setattr__(event_id, "int", int.from_bytes(os.urandom(16)) & _CLEAR_VERSION | _SET)
    object.__setattr__(event_id, "is_safe", _UNKNOWN_SAFETY)
    return event_id


class Envelope(BaseModel):
    """What travels on the bus: metadata around an event's ``data``."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID = Field(default_factory=new_event_id)
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
        # The validator itself: what __init__ calls, without its keyword-argument overhead.
        return cls.__pydantic_validator__.validate_python(  # type: ignore[no-any-return]
            {
                "type": event.event_type,
                "version": event.event_version,
                "correlation_id": correlation_id or get_correlation_id(),
                "causation_id": causation_id or current_causation.get(),
                "source": source,
                "data": event.model_dump(mode="json"),
            }
        )

    def to_bytes(self) -> bytes:
        """The JSON wire form."""
        if type(self) is not Envelope:
            return orjson.dumps(self.model_dump(mode="json"))
        try:
            # The same bytes as orjson over model_dump(mode="json") for the JSON values an
            # envelope holds (orjson writes UUIDs and datetimes as pydantic does, with OPT_UTC_Z);
            # anything orjson does not take natively goes the long way.
            return orjson.dumps(self.__dict__, option=orjson.OPT_UTC_Z)
        except TypeError:
            return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, body: bytes | str) -> Envelope:
        """Parse the wire form (raises ``ValueError`` on anything that is not an envelope)."""
        return cls.__pydantic_validator__.validate_json(body)  # type: ignore[no-any-return]

    def event(self, registry: EventRegistry) -> Event | None:
        """The ``data`` validated against the class ``registry`` (a bus's) has for it, or
        ``None`` when it has none (an unknown type or version)."""
        return registry.resolve(self)

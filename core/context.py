"""Request-scoped context that travels with every log line, outbound call and bus message."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

__all__ = [
    "causation_id",
    "correlation_id",
    "get_correlation_id",
    "new_correlation_id",
    "valid_correlation_id",
]

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
# The id of the bus message being handled: events published while handling it are caused by it.
causation_id: ContextVar[str | None] = ContextVar("causation_id", default=None)

# Client-supplied ids are echoed into logs and headers, so they are restricted to a safe alphabet
# and length: no header injection, no log forging.
_VALID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_correlation_id() -> str:
    """Return a fresh correlation id."""
    return uuid.uuid4().hex


def valid_correlation_id(value: str | None) -> bool:
    """Whether a client-supplied correlation id may be echoed."""
    return value is not None and _VALID.fullmatch(value) is not None


def get_correlation_id() -> str | None:
    """The correlation id of the current request or message, if any."""
    return correlation_id.get()

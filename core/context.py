"""Request-scoped context that travels with every log line, outbound call and bus message."""

from __future__ import annotations

import re
from contextvars import ContextVar
from random import getrandbits

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
    """Return a fresh correlation id: 32 random hex digits, like ``uuid4().hex``.

    Unique, not secret (it is echoed to the client and logged): ``random``'s generator, seeded
    from the OS at import and again in a forked child, costs a fraction of ``uuid4`` (a system
    call and a ``UUID`` object per request).
    """
    return f"{getrandbits(128):032x}"


def valid_correlation_id(value: str | None) -> bool:
    """Whether a client-supplied correlation id may be echoed."""
    return value is not None and _VALID.fullmatch(value) is not None


def get_correlation_id() -> str | None:
    """The correlation id of the current request or message, if any."""
    return correlation_id.get()

"""The cache's event on the bus: marks invalidated by one instance, for the others.

It travels as a broadcast (every instance gets its copy, nothing is retried or parked: see
``core.bus.transport``); ``core.cache.broadcast`` publishes and receives it.
"""

from __future__ import annotations

from pydantic import Field

from core.bus.events import Event
from core.cache.invalidation import MAX_MARKS

__all__ = ["CacheInvalidated"]


class CacheInvalidated(Event):
    """``marks`` (``core.cache.keys``) of cache ``namespace`` were invalidated by the cache
    instance ``origin``; their version counters in Redis were bumped before this was sent."""

    event_type = "cache.invalidated"
    event_version = 1

    namespace: str = Field(min_length=1, max_length=255)
    origin: str = Field(min_length=1, max_length=64)
    marks: tuple[str, ...] = Field(min_length=1, max_length=MAX_MARKS)

"""The in-process tier: an LRU bounded by entries and by bytes, with an index of marks.

Entries keep the encoded record, and the byte bound counts it alone. Its first hit decodes it (a
check that the value reads back as its type) and, for a type whose values cannot be changed
(``Codec.shared``), keeps the decoded value for the later hits; for any other type every hit
decodes a fresh value, so a caller that mutates what it got cannot change what the next one gets.
A *mark* is a key or tag name (``core.cache.keys``); ``drop_marks`` removes every entry carrying
one, which is how an invalidation reaches this tier.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable

from core.cache.serialize import Record

__all__ = ["UNREAD", "MemoryEntry", "MemoryTier", "Unread"]

_ENTRY_OVERHEAD = 256  # the entry object, the dict slots and the index sets, roughly


class Unread:
    """The value of an entry not decoded yet (or one each hit decodes anew)."""


UNREAD = Unread()


class MemoryEntry:
    """One cached record and when this process stops serving it.

    ``value``: ``UNREAD``, or the decoded value once a hit has read it, if it can be shared (see
    the module docstring). ``json``: ``None``, or the value's JSON as its codec writes it, once a
    hit has asked for it (``Policy.json_of``): the same bytes object as the record's payload
    unless that came from another writer in another form.
    """

    __slots__ = ("expires_at", "json", "marks", "owner", "quiet_until", "record", "size", "value")

    value: object
    json: bytes | None

    def __init__(
        self,
        record: Record,
        expires_at: float,
        owner: str,
        marks: tuple[str, ...],
        size: int,
        quiet_until: float,
    ) -> None:
        self.record = record
        self.expires_at = expires_at
        self.quiet_until = quiet_until  # no early refresh to consider before (``Policy``)
        self.owner = owner
        self.marks = marks
        self.size = size
        self.value = UNREAD
        self.json = None


class MemoryTier:
    """A least-recently-used map of records, never above ``max_entries`` nor ``max_bytes``.

    ``on_evict(owner)`` is called for every entry pushed out by the bounds (not for expiry or
    invalidation), with the name of the function that stored it.
    """

    name = "memory"

    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        on_evict: Callable[[str], None] | None = None,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._on_evict = on_evict
        self._data: OrderedDict[str, MemoryEntry] = OrderedDict()
        self._index: dict[str, set[str]] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    @property
    def size_bytes(self) -> int:
        """The estimated memory held by the entries."""
        return self._bytes

    def get(self, key: str, now: float) -> MemoryEntry | None:
        """The live entry of ``key`` (now the most recently used), or ``None``."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            self._remove(key)
            return None
        self._data.move_to_end(key)
        return entry

    def set(
        self,
        key: str,
        record: Record,
        *,
        expires_at: float,
        owner: str,
        marks: tuple[str, ...] = (),
        quiet_until: float = -math.inf,
    ) -> bool:
        """Store ``record`` under ``key`` until ``expires_at``; ``False`` if it can never fit.
        ``quiet_until``: before it, a hit need not consider an early refresh."""
        size = len(record.payload) + len(key) + _ENTRY_OVERHEAD + sum(map(len, marks))
        if size > self.max_bytes:
            return False
        if key in self._data:
            self._remove(key)
        self._data[key] = MemoryEntry(record, expires_at, owner, marks, size, quiet_until)
        self._bytes += size
        for mark in marks:
            self._index.setdefault(mark, set()).add(key)
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(self._data))
            evicted = self._remove(oldest)
            if self._on_evict is not None:
                self._on_evict(evicted.owner)
        return True

    def delete(self, key: str) -> bool:
        """Forget ``key``; ``True`` if it was there."""
        if key not in self._data:
            return False
        self._remove(key)
        return True

    def drop_marks(self, marks: Iterable[str]) -> int:
        """Forget every entry carrying one of ``marks``; return how many were dropped."""
        dropped = 0
        for mark in marks:
            for key in self._index.pop(mark, ()):
                if key in self._data:
                    self._remove(key)
                    dropped += 1
        return dropped

    def clear(self) -> None:
        """Forget everything."""
        self._data.clear()
        self._index.clear()
        self._bytes = 0

    def _remove(self, key: str) -> MemoryEntry:
        entry = self._data.pop(key)
        self._bytes -= entry.size
        for mark in entry.marks:
            keys = self._index.get(mark)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._index[mark]
        return entry

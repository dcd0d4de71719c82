"""What one ``@cached`` declares, and how its results become records and come back."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Literal, TypeVar

import orjson

from core.cache.keys import KeyBuilder
from core.cache.memory import UNREAD, MemoryEntry
from core.cache.serialize import (
    Codec,
    InvalidRecord,
    JsonCodec,
    Kind,
    Record,
    codec_for,
)

__all__ = ["CachedError", "Policy", "TierName"]

log = logging.getLogger("core.cache")

R = TypeVar("R")

TierName = Literal["memory", "redis", "memcached"]

_MIN_GAP = 0.01  # early refresh starts at least this fraction of the ttl before expiry
# Before expires - gap * beta * 30, the XFetch draw succeeds with probability e^-30 (~1e-13):
# hits until then skip it.
_XFETCH_HORIZON = 30.0


class CachedError:
    """A cached exception, re-created for each caller that hits it."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class Policy(Generic[R]):
    """The options of one decorated function (see ``core.cache.cached``) and its codec.

    The codec comes from the return annotation, resolved at the first call so that forward
    references defined later in the module work.
    """

    def __init__(
        self,
        func: Callable[..., Awaitable[R]],
        *,
        keys: KeyBuilder,
        ttl: float,
        name: str,
        tiers: Sequence[TierName] | None,
        negative_ttl: float | None,
        cache_errors: tuple[type[Exception], ...],
        early_refresh: float | None,
        stale_ttl: float,
        l1_ttl: float | None,
        lock: bool,
        version: int,
    ) -> None:
        if ttl <= 0 or (negative_ttl is not None and negative_ttl <= 0):
            raise ValueError("ttl and negative_ttl must be positive")
        if stale_ttl < 0 or (early_refresh is not None and early_refresh < 0):
            raise ValueError("stale_ttl and early_refresh cannot be negative")
        if cache_errors and negative_ttl is None:
            raise ValueError("cache_errors needs a negative_ttl")
        self.func = func
        self.keys = keys
        self.ttl = ttl
        self.name = name
        self.tiers = None if tiers is None else tuple(tiers)
        self.negative_ttl = negative_ttl
        self.cache_errors = cache_errors
        self.early_refresh = early_refresh
        self.stale_ttl = stale_ttl
        self.l1_ttl = l1_ttl
        self.lock = lock
        self.version = version
        self._errors = {_qualified(cls): cls for cls in cache_errors}
        self._codec: Codec[R] | None = None
        self._warned: set[str] = set()

    def warn_once(self, problem: str, message: str, *args: object) -> None:
        """Log ``message`` the first time this function has ``problem``; later, at debug level."""
        level = logging.DEBUG if problem in self._warned else logging.WARNING
        self._warned.add(problem)
        log.log(level, "%s: " + message, self.name, *args)

    @property
    def codec(self) -> Codec[R]:
        """How results are written and read back (validated)."""
        if self._codec is None:
            try:
                self._codec = codec_for(self.func)
            except NameError as exc:
                log.warning("%s: return type unresolved (%s); caching as JSON", self.name, exc)
                self._codec = JsonCodec()
        return self._codec

    def record(
        self, result: R, *, created: float, now: float, delta: float, stamps: tuple[int, ...] | None
    ) -> Record | None:
        """The record of a returned ``result``; ``None`` when it is not to be cached."""
        if result is None:
            if self.negative_ttl is None:
                return None
            return Record(b"", created, now + self.negative_ttl, delta, stamps, Kind.NONE)
        try:
            payload = self.codec.dumps(result)
        except Exception as exc:  # an uncacheable value is returned, just not cached
            self.warn_once("serialize", "result not cached, cannot serialize: %r", exc)
            return None
        return Record(payload, created, now + self.ttl, delta, stamps)

    def error_record(
        self, error: Exception, *, created: float, now: float, stamps: tuple[int, ...] | None
    ) -> Record:
        """The record of one of the declared ``cache_errors``."""
        assert self.negative_ttl is not None
        payload = orjson.dumps({"type": _qualified(type(error)), "detail": str(error)})
        return Record(payload, created, now + self.negative_ttl, 0.0, stamps, Kind.ERROR)

    def decode(self, record: Record) -> R | CachedError:
        """The result a record holds; ``InvalidRecord`` if it is not a valid one."""
        if record.kind is Kind.VALUE:
            try:
                return (self._codec or self.codec).loads(record.payload)
            except Exception as exc:
                raise InvalidRecord(f"payload rejected: {type(exc).__name__}") from None
        if record.kind == Kind.NONE:
            if self.negative_ttl is None:
                raise InvalidRecord("negative caching is off")
            return None  # type: ignore[return-value]
        return CachedError(self._error(record.payload))

    def value_of(self, entry: MemoryEntry) -> R | CachedError:
        """The result an in-process entry holds: kept on the entry if it cannot be changed,
        decoded anew otherwise; ``InvalidRecord`` if it is not a valid one."""
        value = entry.value
        if value is not UNREAD:
            return value  # type: ignore[return-value]
        result = self.decode(entry.record)
        kind = entry.record.kind
        if kind is Kind.NONE or (kind is Kind.VALUE and (self._codec or self.codec).shared):
            entry.value = result
        return result

    def json_of(self, entry: MemoryEntry) -> bytes | None:
        """The JSON of the value an in-process entry holds, as the codec writes it (so nothing
        its type leaves out, whoever wrote the record); kept on the entry. ``None`` if the entry
        holds ``None`` or an error; ``InvalidRecord`` if it is not a valid record."""
        if entry.json is not None:
            return entry.json
        if entry.record.kind is not Kind.VALUE:
            return None
        payload = entry.record.payload
        codec = self._codec or self.codec
        try:
            value = codec.loads(payload)
            written = codec.dumps(value)
        except Exception as exc:
            raise InvalidRecord(f"payload rejected: {type(exc).__name__}") from None
        entry.json = payload if written == payload else written
        if codec.shared:
            entry.value = value
        return entry.json

    def should_refresh(self, record: Record, now: float) -> bool:
        """Whether a hit on ``record`` at ``now`` starts a background refresh.

        Past ``expires`` (within ``stale_ttl``) always; before, with the XFetch probability
        (Vattani et al., VLDB 2015): ``now - gap * beta * ln(U) >= expires``, where ``gap`` is how
        long the computation took, at least 1 % of the ttl, so that a hot key is recomputed shortly
        before it expires, by one caller, instead of missing for all of them.
        """
        if now >= record.expires:
            return True
        beta = self.early_refresh
        if beta is None or record.kind == Kind.ERROR:
            return False
        gap = max(record.delta, (record.expires - record.created) * _MIN_GAP)
        return now - gap * beta * math.log(1.0 - random.random()) >= record.expires  # noqa: S311

    def quiet_until(self, record: Record) -> float:
        """Until when a hit on ``record`` cannot start a refresh (``should_refresh``), but with
        a negligible probability: the hit path skips the random draw until then."""
        beta = self.early_refresh
        if beta is None or record.kind == Kind.ERROR:
            return record.expires
        gap = max(record.delta, (record.expires - record.created) * _MIN_GAP)
        return record.expires - gap * beta * _XFETCH_HORIZON

    def _error(self, payload: bytes) -> Exception:
        try:
            data = orjson.loads(payload)
            cls = self._errors[data["type"]]
            detail = data["detail"]
            if not isinstance(detail, str):
                raise TypeError("detail")
            return cls(detail)
        except Exception as exc:
            raise InvalidRecord(f"error record rejected: {type(exc).__name__}") from None


def _qualified(cls: type[BaseException]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"

"""A circuit breaker per remote tier: stop waiting on a dead server, probe it again later."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

__all__ = ["BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """Closed while calls succeed; open after ``threshold`` consecutive failures.

    While open, ``allow()`` answers ``False`` at once (the tier is skipped). ``cooldown`` seconds
    after opening, one call is let through as a probe (half-open): its success closes the breaker,
    its failure opens it for another cooldown. A probe that never reports (its caller was
    cancelled) is replaced by a new one after a cooldown.
    """

    def __init__(
        self,
        *,
        threshold: int = 3,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1 or cooldown <= 0:
            raise ValueError("threshold must be at least 1 and cooldown positive")
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_at: float | None = None

    @property
    def state(self) -> BreakerState:
        """``closed``, ``open`` or ``half-open`` (a probe is in flight)."""
        if self._opened_at is None:
            return "closed"
        return "open" if self._probe_at is None else "half-open"

    def allow(self) -> bool:
        """Whether a call may go to the tier now."""
        if self._opened_at is None:
            return True
        now = self._clock()
        since = self._opened_at if self._probe_at is None else self._probe_at
        if now - since < self.cooldown:
            return False
        self._probe_at = now
        return True

    def success(self) -> None:
        """Report a call that worked."""
        self._failures = 0
        self._opened_at = None
        self._probe_at = None

    def failure(self) -> bool:
        """Report a call that failed; ``True`` if this opened the breaker."""
        self._failures += 1
        was_closed = self._opened_at is None
        if was_closed and self._failures < self.threshold:
            return False
        self._opened_at = self._clock()
        self._probe_at = None
        return was_closed

"""A circuit breaker per upstream instance: closed -> open -> half-open (one probe) -> closed.

It opens after ``failure_threshold`` consecutive failures (passive outlier ejection). While open
the instance gets no traffic; after the cooldown (or as soon as an active health check passes) it
lets exactly one request through as a probe: success closes it, failure opens it again for twice
as long, up to ``max_cooldown``.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(enum.IntEnum):
    """The states, numbered as the ``gateway_breaker_state`` gauge reports them."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """The breaker of one instance. Not thread-safe; the event loop is its only user."""

    def __init__(
        self,
        *,
        failure_threshold: int,
        cooldown: float,
        max_cooldown: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.base_cooldown = cooldown
        self.max_cooldown = max(cooldown, max_cooldown)
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._cooldown = cooldown
        self._open_until = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose cooldown ended reads as half-open)."""
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            self._set(BreakerState.HALF_OPEN)
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures so far."""
        return self._failures

    def allows(self) -> bool:
        """Whether a request may be sent now (without reserving the half-open probe)."""
        state = self.state
        return state is BreakerState.CLOSED or (
            state is BreakerState.HALF_OPEN and not self._probing
        )

    def acquire(self) -> bool:
        """Reserve a request; in half-open this takes the single probe slot."""
        if not self.allows():
            return False
        if self._state is BreakerState.HALF_OPEN:
            self._probing = True
        return True

    def release(self) -> None:
        """A reserved request ended without a verdict (cancelled): free the probe slot."""
        self._probing = False

    def record_success(self) -> None:
        """A request succeeded: close and forget the failures."""
        self._failures = 0
        self._probing = False
        if self._state is not BreakerState.CLOSED:
            self._cooldown = self.base_cooldown
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """A request failed: a failed probe reopens, enough consecutive failures open."""
        self._failures += 1
        probing, self._probing = self._probing, False
        if self._state is BreakerState.HALF_OPEN or probing:
            self._cooldown = min(self._cooldown * 2, self.max_cooldown)
            self._open()
        elif self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold:
            self._open()

    def trial(self) -> None:
        """An active health check passed: an open breaker goes half-open now."""
        if self._state is BreakerState.OPEN:
            self._set(BreakerState.HALF_OPEN)

    def _open(self) -> None:
        self._open_until = self._clock() + self._cooldown
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)

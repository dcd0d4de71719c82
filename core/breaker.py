"""The circuit breaker: stop sending calls to a dependency that keeps failing, probe it later.

One class for every guarded dependency: each remote cache tier (``core.cache.remote``) and each
upstream instance of the gateway (``gateway.balancer``).

closed -> open -> half-open (one probe) -> closed. It opens after ``failure_threshold``
consecutive failures. While open it admits nothing; once the cooldown has passed (or as soon as
``trial()`` says an active health check passed) it is half-open and admits exactly one call, the
probe: its success closes the breaker, its failure opens it again for twice as long, up to
``max_cooldown`` (by default the cooldown does not grow). A probe whose caller was cancelled is
given back with ``release()``; with ``probe_timeout``, a probe that has not reported after that
long is presumed lost and the next call becomes the probe instead.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(enum.IntEnum):
    """The states, numbered as the gateway's ``gateway_breaker_state`` gauge reports them."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """The breaker of one dependency. Not thread-safe; the event loop is its only user.

    Callers bracket every call: ``acquire()`` (``False``: do not call), then
    ``record_success()``, ``record_failure()`` or, without a verdict, ``release()``.
    ``on_change`` is called with every state entered (for metrics).
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        cooldown: float = 5.0,
        max_cooldown: float | None = None,
        probe_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1 or cooldown <= 0:
            raise ValueError("failure_threshold must be at least 1 and cooldown positive")
        if probe_timeout is not None and probe_timeout <= 0:
            raise ValueError("probe_timeout must be positive")
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.max_cooldown = cooldown if max_cooldown is None else max(cooldown, max_cooldown)
        self.probe_timeout = probe_timeout
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._current_cooldown = cooldown
        self._open_until = 0.0
        self._probe_since: float | None = None  # when the probe in flight was admitted

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

    @property
    def current_cooldown(self) -> float:
        """How long the breaker stays open when it opens next (or stays open now)."""
        return self._current_cooldown

    def allows(self) -> bool:
        """Whether a call may be made now (without reserving the half-open probe)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        return state is BreakerState.HALF_OPEN and not self._probing(self._clock())

    def acquire(self) -> bool:
        """Reserve a call; in half-open this takes the single probe slot."""
        if not self.allows():
            return False
        if self._state is BreakerState.HALF_OPEN:
            self._probe_since = self._clock()
        return True

    def release(self) -> None:
        """A reserved call ended without a verdict (cancelled): free the probe slot."""
        self._probe_since = None

    def record_success(self) -> None:
        """A call succeeded: close and forget the failures."""
        self._failures = 0
        self._probe_since = None
        if self._state is not BreakerState.CLOSED:
            self._current_cooldown = self.cooldown
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> bool:
        """A call failed: a failed probe reopens, enough consecutive failures open.

        Returns ``True`` when this failure opened a closed breaker (the moment to log it).
        """
        self._failures += 1
        probing, self._probe_since = self._probe_since is not None, None
        if self._state is BreakerState.HALF_OPEN or probing:
            self._current_cooldown = min(self._current_cooldown * 2, self.max_cooldown)
            self._open()
            return False
        if self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold:
            self._open()
            return True
        return False

    def trial(self) -> None:
        """An active health check passed: an open breaker goes half-open now."""
        if self._state is BreakerState.OPEN:
            self._set(BreakerState.HALF_OPEN)

    def _probing(self, now: float) -> bool:
        if self._probe_since is None:
            return False
        # A probe that never reported (its caller vanished) must not shut the breaker forever.
        return self.probe_timeout is None or now - self._probe_since < self.probe_timeout

    def _open(self) -> None:
        self._open_until = self._clock() + self._current_cooldown
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)

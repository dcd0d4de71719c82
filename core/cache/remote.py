"""What the remote tiers share: every operation bounded in time, failing open, behind a breaker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from core.breaker import BreakerState, CircuitBreaker

__all__ = ["RemoteTier"]

log = logging.getLogger("core.cache")

T = TypeVar("T")


class RemoteTier:
    """Base of the Redis and memcached tiers.

    ``guard(op, default)`` runs ``op()`` within ``timeout`` seconds; any failure (refused
    connection, timeout, protocol error) is counted, reported to the breaker and turned into
    ``default``. Only cancellation of the caller propagates. At most ``concurrency`` operations
    run at once, so a burst queues for a few connections instead of opening hundreds (each a
    handshake on the loop). A call that waits longer than ``timeout`` for its turn gets
    ``default`` too, but that is congestion here, not a failure of the server: it is counted
    apart and does not open the breaker. Subclasses say what a failure leaves behind in
    ``reset()`` (a connection in an unknown state, for instance).
    """

    name: str = "remote"

    def __init__(self, *, timeout: float, breaker: CircuitBreaker, concurrency: int = 16) -> None:
        self.timeout = timeout
        self.breaker = breaker
        self.errors = 0
        self.congested = 0
        self._slots = asyncio.Semaphore(concurrency)

    @property
    def available(self) -> bool:
        """``False`` while the breaker keeps calls away from the server."""
        return self.breaker.state is BreakerState.CLOSED

    async def guard(self, op: Callable[[], Awaitable[T]], default: T) -> T:
        """``await op()`` within the timeout, or ``default`` if it fails or the breaker is open.

        A call admitted as the half-open probe that ends without a verdict (it never got a
        slot in time, the breaker opened while it waited, its caller was cancelled) gives the
        probe back at once, so the next call probes instead of waiting for ``probe_timeout``.
        """
        probe = self.breaker.state is BreakerState.HALF_OPEN
        if not self.breaker.acquire():
            return default
        verdict = False
        try:
            if not await self._take_slot():
                return default
            try:
                async with asyncio.timeout(self.timeout):
                    result = await op()
            except Exception as exc:  # fail open: the caller computes instead
                verdict = True
                self._failed(exc)
                await self.reset()
                return default
            finally:
                self._slots.release()
            if self.breaker.state is not BreakerState.CLOSED:
                log.warning("cache tier %s is back", self.name)
            verdict = True
            self.breaker.record_success()
            return result
        finally:
            if probe and not verdict:
                self.breaker.release()

    async def _take_slot(self) -> bool:
        """Wait (``timeout`` at most) for a free slot; ``False``, holding none, if there was
        none in time (congestion, counted) or the breaker opened meanwhile."""
        if not self._slots.locked():
            await self._slots.acquire()  # free: returns at once
            return True
        try:
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
        except TimeoutError:
            self.congested += 1
            return False
        if self.breaker.state is BreakerState.OPEN:  # it opened while this call waited
            self._slots.release()
            return False
        return True

    async def get(self, key: str) -> bytes | None:
        """The record stored under ``key``; ``None`` if absent or the tier is down."""
        raise NotImplementedError

    async def set(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` under ``key`` for ``ttl`` seconds; ``False`` if the tier is down."""
        raise NotImplementedError

    async def reset(self) -> None:
        """Called after a failed operation; nothing to do by default."""

    async def close(self) -> None:
        """Release the connections."""

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        if self.breaker.record_failure():
            log.warning(
                "cache tier %s is unavailable (%s); skipping it for %.1f s",
                self.name,
                type(exc).__name__,
                self.breaker.current_cooldown,
            )
        else:
            log.debug("cache tier %s operation failed: %r", self.name, exc)

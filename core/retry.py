"""Backoff with full jitter: the one way every reconnect and retry loop in the system waits.

Each wait is drawn uniformly from ``[0, min(cap, base * 2**failures)]`` ("full jitter", as in
AWS's *Exponential Backoff and Jitter*): after an outage, the instances that lost a broker or a
database come back spread over the window instead of all at once.

Why not tenacity: our loops are supervisors, not calls to retry. They run until cancelled, a
healthy period resets the count (a connection that lived an hour and dropped is retried at once,
not after the cap) and what they wait on is a connection's closing future, not a function's
result. Tenacity's ``wait_random_exponential`` is this same formula; wrapping a supervisor in
``AsyncRetrying`` would need a synthetic exception per lost connection and a ``retry_state`` reset
from outside, which is more code than the formula itself.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

__all__ = ["Backoff", "full_jitter"]


def full_jitter(
    failures: int,
    *,
    base: float,
    cap: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """The wait before the next attempt after ``failures`` consecutive failures (0 allowed)."""
    if base <= 0 or cap < base:
        raise ValueError("backoff needs 0 < base <= cap")
    # 2**failures overflows a float long before a loop gives up: clamp the exponent first.
    ceiling: float = min(cap, base * 2.0 ** min(failures, 62))
    return ceiling * rand()  # nosec B311 - spreading retries out, not a secret


class Backoff:
    """The state of one retry loop: ``await backoff.wait()`` after a failure, ``reset()`` after
    a success.

    ``base`` is the ceiling of the first wait and ``cap`` the ceiling of every later one;
    ``failures`` counts the waits since the last reset (for logs and metrics).
    """

    def __init__(
        self,
        *,
        base: float = 0.1,
        cap: float = 5.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        full_jitter(0, base=base, cap=cap)  # validates the bounds once, here
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rand = rand

    def next_delay(self) -> float:
        """Count a failure and return how long to wait before the next attempt."""
        delay = full_jitter(self.failures, base=self.base, cap=self.cap, rand=self._rand)
        self.failures += 1
        return delay

    async def wait(self) -> float:
        """Count a failure and wait the drawn delay; returns it."""
        delay = self.next_delay()
        await asyncio.sleep(delay)  # the backoff itself, not a wait for a condition
        return delay

    def reset(self) -> None:
        """The guarded operation succeeded: the next failure starts from ``base`` again."""
        self.failures = 0

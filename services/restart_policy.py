"""When ``aioshop up`` starts a crashed process again, and when it gives the process up: a
backoff with full jitter after each crash, and a limit of crashes within a window."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from core.retry import full_jitter

__all__ = ["CrashHistory", "RestartPolicy"]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When a process that crashed is started again.

    After its ``n``-th crash within ``window`` seconds it waits a delay drawn from
    ``[0, min(cap, base * 2**(n-1))]`` (``core.retry.full_jitter``); its ``give_up_after``-th
    crash within ``window`` seconds leaves it down for good.
    """

    base: float = 0.5
    cap: float = 30.0
    give_up_after: int = 5
    window: float = 60.0

    def __post_init__(self) -> None:
        if self.give_up_after < 1 or self.window <= 0:
            raise ValueError("give_up_after must be at least 1 and window positive")
        full_jitter(0, base=self.base, cap=self.cap)  # validates base and cap


class CrashHistory:
    """The recent crashes of one process, and what to do after the next one."""

    def __init__(self, policy: RestartPolicy, *, rand: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self.times: deque[float] = deque()
        self._rand = rand

    @property
    def recent(self) -> int:
        """Crashes counted in the window (as of the last one recorded)."""
        return len(self.times)

    def crashed(self, now: float) -> float | None:
        """Record a crash at ``now`` (seconds, any monotonic clock): the delay before starting
        the process again, or ``None`` when it is to be given up."""
        self.times.append(now)
        while now - self.times[0] > self.policy.window:
            self.times.popleft()
        if len(self.times) >= self.policy.give_up_after:
            return None
        failures = len(self.times) - 1
        return full_jitter(failures, base=self.policy.base, cap=self.policy.cap, rand=self._rand)

    def clear(self) -> None:
        """Forget every crash (the process is started again on purpose)."""
        self.times.clear()

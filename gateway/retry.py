"""A retry budget (as Finagle's): retries may add at most ``ratio`` to the load, plus a floor.

Over a sliding window, a retry is allowed while ``retries < ratio * requests + floor``, where
``floor = min_per_second * window``: a quiet upstream may still see a few retries, a busy one at
most ``ratio`` more requests than its clients sent, so retries cannot multiply an overload.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["RetryBudget"]


class RetryBudget:
    """Counts requests and retries per second over the last ``window`` seconds."""

    def __init__(
        self,
        *,
        ratio: float,
        min_per_second: float,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._clock = clock
        self._buckets: deque[list[int]] = deque()  # [second, requests, retries]
        self._requests = 0
        self._retries = 0

    def _current(self) -> list[int]:
        second = int(self._clock())
        horizon = second - int(self.window)
        while self._buckets and self._buckets[0][0] <= horizon:
            _, requests, retries = self._buckets.popleft()
            self._requests -= requests
            self._retries -= retries
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        return self._buckets[-1]

    def record_request(self) -> None:
        """Count a first attempt."""
        self._current()[1] += 1
        self._requests += 1

    def try_retry(self) -> bool:
        """Take a retry from the budget if one is left."""
        bucket = self._current()
        allowed = self._retries < self.ratio * self._requests + self.min_per_second * self.window
        if allowed:
            bucket[2] += 1
            self._retries += 1
        return allowed

    @property
    def retries(self) -> int:
        """Retries taken in the window."""
        self._current()
        return self._retries

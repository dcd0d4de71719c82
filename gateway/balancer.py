"""Upstream pools: instances, power-of-two-choices over the least outstanding, passive ejection.

``Pool.pick`` chooses among instances that pass their active health checks and whose circuit
breaker admits a request: two at random, the one with fewer requests in flight wins (P2C, as
Envoy's least-request balancer). Every attempt is bracketed by ``Instance.begin`` and
``Instance.end(ok)``, which keep the in-flight count and feed the breaker.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from core.breaker import BreakerState, CircuitBreaker
from gateway.metrics import GatewayMetrics
from gateway.retry import RetryBudget

__all__ = ["BreakerConfig", "Instance", "Pool"]


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Thresholds shared by every instance's breaker and health state."""

    eject_after: int = 3
    cooldown: float = 5.0
    max_cooldown: float = 60.0
    unhealthy_threshold: int = 2
    healthy_threshold: int = 1


@dataclass(eq=False)
class Instance:
    """One upstream instance: its base URL, load, health and breaker."""

    upstream: str
    id: str
    url: str
    breaker: CircuitBreaker
    config: BreakerConfig
    metrics: GatewayMetrics | None = None
    outstanding: int = 0
    healthy: bool = True
    _check_failures: int = field(default=0, repr=False)
    _check_successes: int = field(default=0, repr=False)
    _checked: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.metrics is not None:  # read when scraped: no gauge update twice a request
            gauge = self.metrics.outstanding.labels(self.upstream, self.id)
            gauge.set_function(lambda: self.outstanding)

    @property
    def available(self) -> bool:
        """Whether the instance may take a request now."""
        return self.healthy and self.breaker.allows()

    def begin(self) -> bool:
        """Start an attempt (reserves the half-open probe); ``False`` if the breaker refuses."""
        if not self.breaker.acquire():
            return False
        self.outstanding += 1
        return True

    def end(self, ok: bool | None) -> None:
        """End an attempt: ``True`` success, ``False`` failure, ``None`` no verdict (cancelled)."""
        self.outstanding -= 1
        if ok is None:
            self.breaker.release()
        elif ok:
            self.breaker.record_success()
        else:
            self.breaker.record_failure()

    def health_result(self, ok: bool) -> None:
        """Record an active health check: enough failures in a row take the instance out,
        enough successes bring it back (and let an open breaker probe at once). The first
        check decides alone: at start-up nothing is known yet."""
        first, self._checked = not self._checked, True
        if first:
            self.healthy = ok
        if ok:
            self._check_failures = 0
            self._check_successes += 1
            if not self.healthy and self._check_successes >= self.config.healthy_threshold:
                self.healthy = True
            if self.healthy:
                self.breaker.trial()
        else:
            self._check_successes = 0
            self._check_failures += 1
            if self.healthy and self._check_failures >= self.config.unhealthy_threshold:
                self.healthy = False
        if self.metrics is not None:
            self.metrics.instance_healthy.labels(self.upstream, self.id).set(int(self.healthy))


class Pool:
    """The instances of one upstream, its retry budget, and the choice of an instance."""

    def __init__(
        self,
        name: str,
        urls: Sequence[str],
        *,
        config: BreakerConfig,
        budget: RetryBudget,
        metrics: GatewayMetrics | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.budget = budget
        self.metrics = metrics
        self._rng = rng or random.Random()  # noqa: S311 - load spreading, not security
        self.instances = [self._instance(index, url, clock) for index, url in enumerate(urls)]

    def _instance(self, index: int, url: str, clock: Callable[[], float] | None) -> Instance:
        instance_id = f"{self.name}-{index}"
        metrics = self.metrics

        def on_change(state: BreakerState) -> None:
            if metrics is not None:
                metrics.breaker_state.labels(self.name, instance_id).set(int(state))
                metrics.breaker_transitions.labels(self.name, instance_id, state.name.lower()).inc()

        breaker = CircuitBreaker(
            failure_threshold=self.config.eject_after,
            cooldown=self.config.cooldown,
            max_cooldown=self.config.max_cooldown,
            on_change=on_change,
            clock=clock if clock is not None else time.monotonic,
        )
        if metrics is not None:
            metrics.breaker_state.labels(self.name, instance_id).set(0)
            metrics.instance_healthy.labels(self.name, instance_id).set(1)
        return Instance(self.name, instance_id, url, breaker, self.config, metrics)

    def available(self, exclude: Collection[Instance] = ()) -> list[Instance]:
        """Instances that may take a request now, except ``exclude``."""
        return [i for i in self.instances if i.available and i not in exclude]

    @property
    def healthy(self) -> bool:
        """Whether some instance may take a request."""
        return bool(self.available())

    def pick(self, exclude: Collection[Instance] = ()) -> Instance | None:
        """Choose an instance by P2C over the least outstanding and begin an attempt on it."""
        candidates = self.available(exclude)
        while candidates:
            if len(candidates) == 1:
                choice = candidates[0]
            else:
                first, second = self._rng.sample(candidates, 2)
                choice = first if first.outstanding <= second.outstanding else second
            if choice.begin():
                return choice
            candidates.remove(choice)
        return None

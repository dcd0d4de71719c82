"""Upstream pools: instances, power-of-two-choices over the least outstanding, passive ejection.

``Pool.pick`` chooses among instances that pass their active health checks and whose circuit
breaker admits a request: two at random, the one with fewer requests in flight wins (P2C, as
Envoy's least-request balancer). Every attempt is bracketed by ``Instance.begin`` and
``Instance.end(ok)``, which keep the in-flight count and feed the breaker.

``ConcurrencyLimit`` bounds the requests in flight to a pool as a whole (Envoy's circuit breaker
``max_requests`` per cluster): past the bound, a short bounded queue, then 503 at once, so that
an overloaded upstream sheds load instead of collecting requests without end.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from core.breaker import BreakerState, CircuitBreaker
from gateway.metrics import GatewayMetrics
from gateway.retry import RetryBudget

__all__ = ["BreakerConfig", "ConcurrencyLimit", "Instance", "Pool"]


class ConcurrencyLimit:
    """At most ``limit`` holders at once; up to ``queue`` more may wait, first come first served,
    for at most ``queue_timeout`` seconds; the rest are refused.

    The admission of the common case is one comparison and one increment (``try_acquire``), no
    lock and no future: the event loop is single-threaded. A released place goes straight to
    the first waiter, so a waiter is never overtaken by a newcomer.
    """

    __slots__ = ("_waiters", "in_flight", "limit", "queue", "queue_timeout")

    def __init__(self, limit: int, *, queue: int = 0, queue_timeout: float = 0.0) -> None:
        if limit < 1 or queue < 0 or queue_timeout < 0:
            raise ValueError("the limit must be positive, the queue and its timeout not negative")
        self.limit = limit
        self.queue = queue
        self.queue_timeout = queue_timeout
        self.in_flight = 0
        # Only futures still waiting: one that timed out or was cancelled removes itself.
        self._waiters: deque[asyncio.Future[bool]] = deque()

    @property
    def queued(self) -> int:
        """How many are waiting for a place."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a place if one is free now (then ``release`` it exactly once)."""
        if self.in_flight < self.limit:  # never true while some wait: places go to them first
            self.in_flight += 1
            return True
        return False

    async def wait(self) -> str | None:
        """After ``try_acquire`` failed: wait for a place, at most ``queue_timeout`` seconds.
        ``None`` once admitted (then ``release`` it), else why not: ``"queue_full"`` at once,
        or ``"queue_timeout"``."""
        if len(self._waiters) >= self.queue or self.queue_timeout <= 0:
            return "queue_full"
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        expiry = loop.call_later(self.queue_timeout, _expire, waiter)
        try:
            admitted = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()  # handed a place just as the waiting task was cancelled
            else:
                self._forget(waiter)
            raise
        finally:
            expiry.cancel()
        if admitted:
            return None
        self._forget(waiter)
        return "queue_timeout"

    def release(self) -> None:
        """Give a place back: to the first waiter, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # the place changes hands: in_flight stays
                return
        self.in_flight -= 1

    def _forget(self, waiter: asyncio.Future[bool]) -> None:
        with suppress(ValueError):  # already taken off by release()
            self._waiters.remove(waiter)


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


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
    # Called when a request to it fails or it stops answering (service discovery re-resolves).
    on_failure: Callable[[], None] | None = field(default=None, repr=False)
    outstanding: int = 0
    healthy: bool = True
    # Whether its last health check got an HTTP answer, even a 503: the process is up.
    answering: bool = True
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
            if self.on_failure is not None:
                self.on_failure()

    def health_result(self, ok: bool, *, answered: bool | None = None) -> None:
        """Record an active health check: enough failures in a row take the instance out,
        enough successes bring it back (and let an open breaker probe at once). The first
        check decides alone: at start-up nothing is known yet. ``answered``: whether the
        instance answered at all (a 503 is an answer; a refused connection is not), by default
        ``ok``."""
        self.answering = ok if answered is None else (ok or answered)
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
            if not self.answering and self.on_failure is not None:
                self.on_failure()
            if self.healthy and self._check_failures >= self.config.unhealthy_threshold:
                self.healthy = False
        if self.metrics is not None:
            self.metrics.instance_healthy.labels(self.upstream, self.id).set(int(self.healthy))


class Pool:
    """The instances of one upstream, its retry budget, its concurrency limit, and the choice
    of an instance."""

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
        limit: ConcurrencyLimit | None = None,
        panic_routing: bool = True,
    ) -> None:
        self.name = name
        self.config = config
        self.budget = budget
        self.metrics = metrics
        # Proxied requests in flight to the pool as a whole (streams are bounded apart).
        self.limit = limit if limit is not None else ConcurrencyLimit(2**31)
        if metrics is not None:  # read when scraped, as the instances' outstanding gauge
            metrics.upstream_in_flight.labels(name).set_function(lambda: self.limit.in_flight)
            metrics.upstream_queued.labels(name).set_function(lambda: self.limit.queued)
        self._rng = rng or random.Random()  # noqa: S311 - load spreading, not security
        self._clock = clock
        self._next_index = 0
        self.on_failure: Callable[[], None] | None = None
        self.instances = [self._instance(url) for url in urls]
        self.panic_routing = panic_routing

    def update(self, urls: Sequence[str]) -> None:
        """Make ``urls`` the pool's instances (service discovery found a new set).

        Instances still listed keep their state (health, breaker, load). New ones take traffic
        once their first health check passes. Removed ones take no new request; those in flight
        finish.
        """
        current = {instance.url: instance for instance in self.instances}
        kept = [current[url] for url in urls if url in current]
        added = [self._instance(url, checked=False) for url in urls if url not in current]
        for instance in self.instances:
            if instance.url not in urls:
                self._forget(instance)
        self.instances = kept + added

    def _failed(self) -> None:
        if self.on_failure is not None:
            self.on_failure()

    def _forget(self, instance: Instance) -> None:
        instance.on_failure = None
        if self.metrics is None:
            return
        for family in (
            self.metrics.breaker_state,
            self.metrics.instance_healthy,
            self.metrics.outstanding,
        ):
            with suppress(KeyError):
                family.remove(self.name, instance.id)

    def _instance(self, url: str, *, checked: bool = True) -> Instance:
        """A new instance at ``url``; ``checked=False``: out of rotation until a health check
        passes (one discovered while the gateway serves)."""
        instance_id = f"{self.name}-{self._next_index}"
        self._next_index += 1
        metrics = self.metrics
        clock = self._clock

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
            metrics.instance_healthy.labels(self.name, instance_id).set(int(checked))
        instance = Instance(
            self.name, instance_id, url, breaker, self.config, metrics, on_failure=self._failed
        )
        if not checked:
            instance.healthy = False  # until its first health check, which decides alone
        return instance

    @property
    def panicking(self) -> bool:
        """Whether no instance passes its readiness check while some still answer it.

        Then a dependency they all share is down (a broker, Redis): each instance still serves
        what does not need it (catalog reads, orders kept in the outbox), so requests go to the
        answering ones, as Envoy's panic threshold does, rather than all failing at the gateway.
        """
        return (
            self.panic_routing
            and not any(i.healthy for i in self.instances)
            and any(i.answering for i in self.instances)
        )

    def available(self, exclude: Collection[Instance] = ()) -> list[Instance]:
        """Instances that may take a request now, except ``exclude``: those ready and admitted
        by their breaker or, while the pool is ``panicking``, those answering and admitted."""
        if self.panicking:
            return [
                i for i in self.instances if i.answering and i.breaker.allows() and i not in exclude
            ]
        return [i for i in self.instances if i.available and i not in exclude]

    @property
    def healthy(self) -> bool:
        """Whether some instance passes its readiness check and may take a request."""
        return any(i.available for i in self.instances)

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
                if not choice.healthy and self.metrics is not None:
                    self.metrics.upstream_panic.labels(self.name).inc()
                return choice
            candidates.remove(choice)
        return None

"""The circuit breaker, on a clock the test moves."""

from core.cache.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_the_threshold_of_consecutive_failures() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=5, clock=Clock())
    assert breaker.failure() is False
    breaker.success()  # a success resets the count
    assert breaker.failure() is False
    assert breaker.failure() is False
    assert breaker.allow()
    assert breaker.failure() is True
    assert breaker.state == "open"
    assert not breaker.allow()


def test_lets_one_probe_through_after_the_cooldown_and_closes_on_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown=5, clock=clock)
    breaker.failure()
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()
    assert breaker.state == "half-open"
    assert not breaker.allow()  # one probe at a time
    breaker.success()
    assert breaker.state == "closed"
    assert breaker.allow()


def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=2, cooldown=5, clock=clock)
    breaker.failure()
    breaker.failure()
    clock.now += 5
    assert breaker.allow()
    assert breaker.failure() is False  # it was not closed: not a new opening
    assert breaker.state == "open"
    clock.now += 4
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_a_probe_that_never_reports_is_replaced_after_a_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown=5, clock=clock)
    breaker.failure()
    clock.now += 5
    assert breaker.allow()
    clock.now += 5
    assert breaker.allow()

"""The circuit breaker (``core.breaker``), on a clock the test moves: as a remote cache tier uses
it (fixed cooldown, a lost probe replaced) and as a gateway instance does (growing cooldown,
probe slot released on cancellation, health checks, state changes reported)."""

from __future__ import annotations

import pytest

from core.breaker import BreakerState, CircuitBreaker

pytestmark = pytest.mark.unit


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_the_threshold_of_consecutive_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown=5, clock=Clock())
    assert breaker.record_failure() is False
    breaker.record_success()  # a success resets the count
    assert breaker.failures == 0
    assert breaker.record_failure() is False
    assert breaker.record_failure() is False
    assert breaker.acquire()
    assert breaker.record_failure() is True
    assert breaker.state is BreakerState.OPEN
    assert not breaker.acquire()


def test_lets_one_probe_through_after_the_cooldown_and_closes_on_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=5, clock=clock)
    breaker.record_failure()
    clock.now += 4.9
    assert not breaker.acquire()
    clock.now += 0.2
    assert breaker.acquire()
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.acquire()  # one probe at a time
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.acquire()


def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown=5, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 5
    assert breaker.acquire()
    assert breaker.record_failure() is False  # it was not closed: not a new opening
    assert breaker.state is BreakerState.OPEN
    clock.now += 4
    assert not breaker.acquire()
    clock.now += 1
    assert breaker.acquire()


def test_a_probe_that_never_reports_is_replaced_after_the_probe_timeout() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=5, probe_timeout=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.acquire()
    clock.now += 4.9
    assert not breaker.acquire()
    clock.now += 0.1
    assert breaker.acquire()


def test_without_a_probe_timeout_a_probe_holds_its_slot_until_it_reports() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.acquire()
    clock.now += 3600
    assert not breaker.acquire()


def test_opens_after_consecutive_failures_probes_once_and_doubles_the_cooldown() -> None:
    clock = Clock()
    states: list[BreakerState] = []
    breaker = CircuitBreaker(
        failure_threshold=3, cooldown=5, max_cooldown=20, clock=clock, on_change=states.append
    )
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # not consecutive: starts over
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allows()
    clock.now += 5
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.acquire()
    assert not breaker.acquire(), "one probe at a time"
    breaker.record_failure()  # the probe failed: open for twice as long
    assert breaker.state is BreakerState.OPEN
    assert breaker.current_cooldown == 10
    clock.now += 9.9
    assert breaker.state is BreakerState.OPEN
    clock.now += 0.1
    assert breaker.acquire()
    breaker.release()  # a cancelled probe frees the slot
    assert breaker.acquire()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.current_cooldown == 5  # closing forgets the growth
    assert states == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def test_the_cooldown_grows_no_further_than_max_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=5, max_cooldown=12, clock=clock)
    breaker.record_failure()
    for expected in (10, 12, 12):
        clock.now += breaker.current_cooldown
        assert breaker.acquire()
        breaker.record_failure()
        assert breaker.current_cooldown == expected
    clock.now += 11.9
    assert not breaker.allows()
    clock.now += 0.1
    assert breaker.allows()


def test_goes_half_open_when_a_health_check_passes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=60, max_cooldown=60, clock=clock)
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    breaker.trial()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.acquire()


def test_states_are_numbered_as_the_gateway_gauge_reports_them() -> None:
    assert [int(state) for state in BreakerState] == [0, 1, 2]
    assert [state.name.lower() for state in BreakerState] == ["closed", "half_open", "open"]


def test_rejects_meaningless_settings() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError, match="cooldown positive"):
        CircuitBreaker(cooldown=0)
    with pytest.raises(ValueError, match="probe_timeout"):
        CircuitBreaker(probe_timeout=0)

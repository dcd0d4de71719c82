"""Backoff with full jitter: the bounds of each wait, the growth, the reset."""

from __future__ import annotations

import pytest

from core.retry import Backoff, full_jitter

pytestmark = pytest.mark.unit


def test_each_wait_is_the_random_fraction_of_a_doubling_ceiling() -> None:
    waits = [full_jitter(n, base=0.1, cap=5.0, rand=lambda: 1.0) for n in range(8)]
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])
    assert full_jitter(3, base=0.1, cap=5.0, rand=lambda: 0.5) == pytest.approx(0.4)
    assert full_jitter(3, base=0.1, cap=5.0, rand=lambda: 0.0) == 0.0


def test_a_huge_failure_count_stays_at_the_cap() -> None:
    assert full_jitter(10_000, base=0.1, cap=5.0, rand=lambda: 1.0) == 5.0


def test_real_draws_stay_inside_their_window() -> None:
    draws = [full_jitter(4, base=0.1, cap=5.0) for _ in range(500)]
    assert all(0.0 <= d <= 1.6 for d in draws)
    assert len(set(draws)) > 400  # spread out, not one value


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_nonsense_bounds_are_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="0 < base <= cap"):
        Backoff(base=base, cap=cap)


def test_backoff_grows_until_reset() -> None:
    backoff = Backoff(base=1.0, cap=8.0, rand=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff.failures == 5
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay() == 1.0


async def test_wait_sleeps_the_drawn_delay() -> None:
    backoff = Backoff(base=0.01, cap=0.01, rand=lambda: 1.0)
    assert await backoff.wait() == 0.01
    assert backoff.failures == 1

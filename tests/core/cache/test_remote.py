"""``RemoteTier.guard`` and its breaker: a half-open probe that ends without a verdict (no slot
in time, its caller cancelled) gives the probe slot back at once, on the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from core.breaker import BreakerState, CircuitBreaker
from core.cache.redis_tier import RedisTier
from core.testing import wait_for
from tests.core.conftest import REDIS_URL


class Congested:
    """A Redis tier of one slot, held by a call admitted while the breaker was closed (it waits
    for ``done``), and the breaker turned half-open meanwhile: the next call is the probe."""

    def __init__(self, tier: RedisTier) -> None:
        self.tier = tier
        self.done = asyncio.Event()
        self.entered = asyncio.Event()
        self.holder: asyncio.Task[bool] | None = None

    async def hold(self) -> None:
        async def op() -> bool:
            self.entered.set()
            await self.done.wait()
            return True

        self.holder = asyncio.create_task(self.tier.guard(op, False))

        async def holding() -> bool:
            return self.entered.is_set()

        await wait_for(holding)

    async def finish(self) -> bool:
        self.done.set()
        assert self.holder is not None
        return await self.holder


@pytest.fixture
async def congested() -> AsyncIterator[Congested]:
    client = Redis.from_url(REDIS_URL)
    # no probe_timeout: a probe that is never given back would hold the slot for good
    breaker = CircuitBreaker(failure_threshold=1, cooldown=60.0)
    tier = RedisTier(client, timeout=30.0, breaker=breaker, concurrency=1)
    state = Congested(tier)
    await state.hold()  # its op runs under the 30 s timeout it started with
    tier.timeout = 0.05  # what the probe waits for a slot
    breaker.record_failure()  # the server failed elsewhere: open...
    breaker.trial()  # ...and a health check passed: half-open, one probe admitted
    assert breaker.state is BreakerState.HALF_OPEN
    yield state
    if state.holder is not None and not state.holder.done():
        await state.finish()
    await client.aclose()


async def test_a_probe_that_gets_no_slot_in_time_frees_the_probe_slot(
    congested: Congested,
) -> None:
    tier, breaker = congested.tier, congested.tier.breaker
    assert breaker.allows()

    assert await tier.get("no-such-key") is None  # the probe waited for a slot and gave up
    assert tier.congested == 1
    assert tier.errors == 0  # congestion, not a failure of the server: no verdict
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allows()  # the next call may probe, without waiting for a cooldown

    assert await congested.finish() is True  # the slot's holder succeeds: the tier is back
    assert breaker.state is BreakerState.CLOSED


async def test_a_probe_cancelled_while_waiting_for_a_slot_frees_the_probe_slot(
    congested: Congested,
) -> None:
    tier, breaker = congested.tier, congested.tier.breaker
    tier.timeout = 30.0  # the probe would wait long: it is cancelled first
    probe = asyncio.create_task(tier.get("no-such-key"))

    async def probing() -> bool:
        return not breaker.allows()

    await wait_for(probing)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allows()

"""Rate limits decided in memory between syncs with Redis: exact at the limit, counted in Redis
with the next sync or flush, never for strict policies, shared by several gateways."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.ratelimit import RateDecision, RateLimiter


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    yield client
    await client.aclose()


@pytest.fixture
def namespace(redis_namespace: str) -> str:
    return f"{redis_namespace}:local-{uuid.uuid4().hex[:8]}"


def limiter(redis: Redis, namespace: str, clock: Clock, *, share: float = 0.1) -> RateLimiter:
    return RateLimiter(
        redis,
        namespace=namespace,
        timeout=5,
        cooldown=0,
        clock=clock,
        sync_interval=1.0,
        local_share=share,
    )


async def counted_in_redis(
    redis: Redis, namespace: str, limit: int, period: float, identity: str = "ip:1"
) -> int:
    """The hits Redis holds for ``identity`` (an exact limiter's view, minus its own)."""
    exact = RateLimiter(redis, namespace=namespace, timeout=5, cooldown=0)
    decision = await exact.hit("default", identity, limit=limit, period=period)
    assert decision is not None
    return limit - decision.remaining - 1


async def hits(
    rl: RateLimiter, n: int, *, limit: int = 100, local: bool = True, identity: str = "ip:1"
) -> list[bool]:
    decisions: list[RateDecision | None] = [
        await rl.hit("default", identity, limit=limit, period=60, local=local) for _ in range(n)
    ]
    assert all(d is not None for d in decisions)
    return [d.allowed for d in decisions if d is not None]


async def test_one_gateway_refuses_exactly_at_the_limit(redis: Redis, namespace: str) -> None:
    rl = limiter(redis, namespace, Clock())

    allowed = await hits(rl, 130)

    assert allowed == [True] * 100 + [False] * 30


async def test_hits_in_memory_reach_redis_with_the_flush(redis: Redis, namespace: str) -> None:
    rl = limiter(redis, namespace, Clock())

    assert await hits(rl, 5) == [True] * 5
    assert await counted_in_redis(redis, namespace, 100, 60) == 1  # four still in memory
    await rl.aclose()

    assert await counted_in_redis(redis, namespace, 100, 60) == 1 + 5  # the probe's hit, and 5


async def test_a_stale_key_asks_redis_and_brings_its_count(redis: Redis, namespace: str) -> None:
    clock = Clock()
    rl = limiter(redis, namespace, clock)
    await hits(rl, 3)
    clock.now += 1.5  # past sync_interval

    await hits(rl, 1)

    assert await counted_in_redis(redis, namespace, 100, 60) == 4


async def test_the_headers_count_down_in_memory(redis: Redis, namespace: str) -> None:
    rl = limiter(redis, namespace, Clock())

    decisions = [
        await rl.hit("default", "ip:1", limit=100, period=60, local=True) for _ in range(4)
    ]

    assert [d.remaining for d in decisions if d is not None] == [99, 98, 97, 96]


async def test_strict_policies_and_small_limits_always_ask_redis(
    redis: Redis, namespace: str
) -> None:
    rl = limiter(redis, namespace, Clock())

    await hits(rl, 3, local=False)
    assert await counted_in_redis(redis, namespace, 100, 60) == 3
    # 10 % of a limit of 5 is less than one request: nothing is decided in memory.
    assert await hits(rl, 3, limit=5, identity="ip:2") == [True] * 3
    assert await counted_in_redis(redis, namespace, 5, 60, identity="ip:2") == 3


async def test_gateways_sharing_a_key_overshoot_by_at_most_their_local_share(
    redis: Redis, namespace: str
) -> None:
    clock = Clock()
    gateways = [limiter(redis, namespace, clock) for _ in range(3)]

    allowed = 0
    for _ in range(60):
        for rl in gateways:
            allowed += sum(await hits(rl, 1))

    assert 100 <= allowed <= 100 + 2 * 10  # (n - 1) * local_share * limit
    for rl in gateways:
        await rl.aclose()
    assert await counted_in_redis(redis, namespace, 100, 60) == 99  # every admitted hit, capped


async def test_without_a_sync_interval_every_hit_asks_redis(redis: Redis, namespace: str) -> None:
    rl = RateLimiter(redis, namespace=namespace, timeout=5, cooldown=0, local_share=0.5)

    await hits(rl, 4)

    assert await counted_in_redis(redis, namespace, 100, 60) == 4


async def test_the_background_flush_sends_what_a_stale_key_admitted(
    redis: Redis, namespace: str
) -> None:
    clock = Clock()
    rl = limiter(redis, namespace, clock)
    await hits(rl, 3)
    clock.now += 1.5

    await rl.flush()

    assert await counted_in_redis(redis, namespace, 100, 60) == 3
    await hits(rl, 2)  # the first asks Redis, the second is decided in memory again
    await rl.aclose()
    assert await counted_in_redis(redis, namespace, 100, 60) == 3 + 1 + 2  # 1: the first probe

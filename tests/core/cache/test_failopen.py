"""Fail-open: with Redis and memcached unreachable or hanging, calls still return, quickly; the
tiers are used again once their servers are back."""

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from core.breaker import BreakerState, CircuitBreaker
from core.cache import Cache, cached
from core.cache.memcached_tier import MemcachedTier
from core.testing import wait_for
from tests.core.cache.conftest import (
    CLOSED_MEMCACHED_URL,
    CLOSED_REDIS_URL,
    CacheFactory,
    ServerProcess,
)

BOUND = 0.5  # seconds a call may take while a tier fails (timeouts are 50 ms here)


def counting(cache: Cache, **options: Any) -> tuple[Callable[[int], Awaitable[int]], list[int]]:
    calls: list[int] = []

    @cached(cache=cache, ttl=60, key="item:{item}", tags=["items"], **options)
    async def get(item: int) -> int:
        calls.append(item)
        return item * 10

    return get, calls


async def timed(call: Awaitable[int]) -> tuple[int, float]:
    started = time.monotonic()
    result = await call
    return result, time.monotonic() - started


async def test_calls_succeed_quickly_with_both_servers_unreachable(
    make_cache: CacheFactory,
) -> None:
    cache = make_cache(
        redis_url=CLOSED_REDIS_URL, memcached_url=CLOSED_MEMCACHED_URL, remote_timeout=0.05
    )
    await cache.start()  # the listener keeps retrying in the background, harmlessly
    get, calls = counting(cache, l1_ttl=0.001)
    for item in range(20):
        result, seconds = await timed(get(item))
        assert result == item * 10
        assert seconds < BOUND
    assert calls == list(range(20))
    assert cache.redis is not None
    assert cache.memcached is not None
    assert cache.redis.breaker.state is BreakerState.OPEN
    assert cache.memcached.breaker.state is BreakerState.OPEN
    errors = cache.redis.errors, cache.memcached.errors
    await get(99)
    assert (cache.redis.errors, cache.memcached.errors) == errors  # not even tried: breakers
    assert await cache.invalidate(tags=["items"]) is False


async def test_single_flight_still_holds_with_the_servers_down(make_cache: CacheFactory) -> None:
    cache = make_cache(redis_url=CLOSED_REDIS_URL, memcached_url=CLOSED_MEMCACHED_URL)
    release = asyncio.Event()
    calls = 0

    @cached(cache=cache, ttl=60, key="k")
    async def slow() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "v"

    tasks = [asyncio.create_task(slow()) for _ in range(50)]

    async def computing() -> bool:
        return calls == 1

    await wait_for(computing)
    release.set()
    assert await asyncio.gather(*tasks) == ["v"] * 50
    assert calls == 1
    assert await slow() == "v"  # from memory
    assert calls == 1


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port whose server accepts connections and never answers (a hung server)."""
    connections: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in connections:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_hung_server_costs_a_timeout_until_the_breaker_opens(
    make_cache: CacheFactory, silent_port: int
) -> None:
    cache = make_cache(
        redis_url=f"redis://127.0.0.1:{silent_port}/0",
        memcached_url=f"memcached://127.0.0.1:{silent_port}",
        remote_timeout=0.05,
        breaker_threshold=2,
    )
    get, calls = counting(cache, tiers=["redis", "memcached"])
    durations = []
    for item in range(6):
        result, seconds = await timed(get(item))
        assert result == item * 10
        durations.append(seconds)
    assert max(durations) < BOUND
    assert durations[-1] < 0.01  # both breakers open: no waiting at all
    assert len(calls) == 6


async def test_memcached_is_used_again_once_it_is_back(
    make_cache: CacheFactory, memcached_process: ServerProcess
) -> None:
    cache = make_cache(
        memcached_url=memcached_process.url, remote_timeout=0.05, breaker_cooldown=0.1
    )
    get, calls = counting(cache, tiers=["memcached"])
    await get(1)
    await get(1)
    assert calls == [1]  # the second call was a memcached hit

    await memcached_process.stop()
    for _ in range(5):
        result, seconds = await timed(get(1))
        assert result == 10
        assert seconds < BOUND
    assert cache.memcached is not None
    assert cache.memcached.breaker.state is not BreakerState.CLOSED

    await memcached_process.start()  # empty, as after a restart
    # A fresh key per attempt: an attempt whose store succeeded but whose read timed out (a
    # starved CPU) leaves its key in memcached, and reusing it would read as never recovering.
    keys = itertools.count(100)

    async def in_use_again() -> bool:
        key = next(keys)
        before = len(calls)
        await get(key)
        await get(key)
        return len(calls) == before + 1

    await wait_for(in_use_again)
    assert cache.memcached.breaker.state is BreakerState.CLOSED


async def test_redis_is_used_again_once_it_is_back(
    make_cache: CacheFactory, redis_process: ServerProcess
) -> None:
    cache = make_cache(
        redis_url=redis_process.url,
        memcached_url=None,
        remote_timeout=0.05,
        breaker_cooldown=0.1,
    )
    await cache.start()
    get, calls = counting(cache, tiers=["redis"])
    await get(1)
    await get(1)
    assert calls == [1]

    await redis_process.stop()
    for _ in range(5):
        result, seconds = await timed(get(1))
        assert result == 10
        assert seconds < BOUND
    assert cache.redis is not None
    assert cache.redis.breaker.state is not BreakerState.CLOSED
    assert len(calls) == 6

    await redis_process.start()
    keys = itertools.count(100)  # a fresh key per attempt, as for memcached above

    async def in_use_again() -> bool:
        key = next(keys)
        before = len(calls)
        await get(key)
        await get(key)
        return len(calls) == before + 1

    await wait_for(in_use_again)

    async def listening_again() -> bool:
        return cache.listening

    await wait_for(listening_again)
    assert cache.redis.breaker.state is BreakerState.CLOSED


async def test_both_servers_down_then_back(
    make_cache: CacheFactory, redis_process: ServerProcess, memcached_process: ServerProcess
) -> None:
    cache = make_cache(
        redis_url=redis_process.url,
        memcached_url=memcached_process.url,
        remote_timeout=0.05,
        breaker_cooldown=0.1,
    )
    await cache.start()
    get, calls = counting(cache, tiers=["redis", "memcached"])
    await get(1)
    await get(1)
    assert calls == [1]

    await redis_process.stop()
    await memcached_process.stop()
    for item in range(10):
        result, seconds = await timed(get(item))
        assert result == item * 10
        assert seconds < BOUND
    assert len(calls) == 11

    await redis_process.start()
    await memcached_process.start()

    keys = itertools.count(100)  # a fresh key per attempt, as above

    async def redis_serves_again() -> bool:
        key = next(keys)
        before = len(calls)
        await get(key)
        await get(key)
        return len(calls) == before + 1

    await wait_for(redis_serves_again)
    fresh = itertools.count(10_000)
    stats = next(iter(cache.stats.functions.values()))

    async def memcached_serves_again() -> bool:
        item = next(fresh)
        await get(item)  # computed, written to both
        async with Redis.from_url(redis_process.url) as client:
            await client.delete(cache.keyspace.record(f"item:{item}", 1))
        before = stats.hits.get("memcached", 0)
        await get(item)  # gone from Redis: memcached has it, if it is in use again
        return stats.hits.get("memcached", 0) == before + 1

    await wait_for(memcached_serves_again)
    assert cache.redis is not None
    assert cache.memcached is not None
    assert cache.redis.available
    assert cache.memcached.available


async def test_memcached_closing_connections_fails_open_instead_of_holding_the_loop() -> None:
    """A server that accepts and closes at once (memcached dying, a proxy in front of a dead
    one): aiomcache 0.8 alone reads b"" forever without yielding (aio-libs/aiomcache#502), so
    this test would hang until pytest's timeout instead of returning."""

    writers: list[asyncio.StreamWriter] = []

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read(1)  # the command has arrived: close before answering
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tier = MemcachedTier(
        "127.0.0.1", port, timeout=0.5, breaker=CircuitBreaker(failure_threshold=100)
    )
    try:
        async with asyncio.timeout(5):
            stored = await tier.set("item:1", b"value", 60)
            deleted_or_missing = await tier.get("item:1")
        assert stored is False  # failed open: the caller goes on without the tier
        assert deleted_or_missing is None
        assert tier.errors >= 1
    finally:
        await tier.close()
        server.close()
        for writer in writers:  # connections the client opened and never used, too
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
        await server.wait_closed()

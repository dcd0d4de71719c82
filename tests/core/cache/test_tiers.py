"""Hit, miss and fill through the tiers, per-decorator tiers, ttl expiry (real Redis, memcached)."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiomcache
from redis.asyncio import Redis

from core.cache import Cache, cached, decode_record
from core.testing import wait_for
from tests.core.cache.conftest import CacheFactory


class Counter:
    """A data source that counts how often it was asked."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, item: int) -> dict[str, Any]:
        self.calls += 1
        return {"item": item, "version": self.calls}


def cached_source(cache: Cache, source: Counter, **options: Any) -> Callable[[int], Awaitable[Any]]:
    options.setdefault("ttl", 30)
    options.setdefault("key", "item:{item}")

    @cached(cache=cache, **options)
    async def get(item: int) -> dict[str, Any]:
        return await source(item)

    return get


async def in_memcached(key: str) -> bytes | None:
    client = aiomcache.Client("127.0.0.1", 11211)
    try:
        return await client.get(key.encode())
    finally:
        await client.close()


async def test_a_miss_fills_every_tier_and_a_lower_hit_fills_those_above(
    make_cache: CacheFactory, redis: Redis
) -> None:
    cache = make_cache(lock_ttl=60)  # a lock left behind would outlive the test
    source = Counter()
    get = cached_source(cache, source)
    key = cache.keyspace.record("item:1", 1)

    lock = cache.keyspace.lock("item:1", 1)

    async def unlocked() -> bool:
        return await redis.exists(lock) == 0

    assert await get(1) == {"item": 1, "version": 1}
    assert cache.memory is not None
    assert key in cache.memory
    assert decode_record(await redis.get(key)).payload == b'{"item":1,"version":1}'
    assert await in_memcached(key) == await redis.get(key)
    assert await unlocked()  # released with the write

    assert await get(1) == {"item": 1, "version": 1}  # memory
    cache.memory.clear()
    assert await get(1) == {"item": 1, "version": 1}  # redis, back into memory
    assert key in cache.memory

    cache.memory.clear()
    await redis.delete(key)
    assert await get(1) == {"item": 1, "version": 1}  # memcached, back into redis and memory
    assert key in cache.memory

    async def refilled() -> bool:
        return await redis.exists(key) == 1

    await wait_for(refilled)
    await wait_for(unlocked)  # taken by the read that missed Redis, released after
    assert source.calls == 1
    stats = cache.stats.functions[next(iter(cache.stats.functions))]
    assert stats.hits == {"memory": 1, "redis": 1, "memcached": 1}
    assert stats.misses == {"memory": 3, "redis": 2, "memcached": 1}
    assert stats.loads == 1


async def test_each_call_gets_its_own_copy(make_cache: CacheFactory) -> None:
    get = cached_source(make_cache(), Counter())
    first = await get(1)
    first["item"] = "changed by a caller"
    assert (await get(1))["item"] == 1


async def test_a_decorator_uses_only_the_tiers_it_names(
    make_cache: CacheFactory, redis: Redis
) -> None:
    cache = make_cache()
    only_memory = cached_source(cache, Counter(), tiers=["memory"], key="m:{item}")
    only_memcached = cached_source(cache, Counter(), tiers=["memcached"], key="c:{item}")

    await only_memory(1)
    await only_memcached(1)

    memory_key, memcached_key = cache.keyspace.record("m:1", 1), cache.keyspace.record("c:1", 1)
    assert cache.memory is not None
    assert memory_key in cache.memory
    assert memcached_key not in cache.memory
    assert await redis.exists(memory_key, memcached_key) == 0
    assert await in_memcached(memory_key) is None
    assert await in_memcached(memcached_key) is not None


async def test_the_tiers_follow_the_cache_order(make_cache: CacheFactory, redis: Redis) -> None:
    cache = make_cache(tiers=["memcached", "redis"])
    assert [tier.name for tier in cache.tiers] == ["memcached", "redis"]
    source = Counter()
    get = cached_source(cache, source)
    await get(1)
    key = cache.keyspace.record("item:1", 1)
    await redis.delete(key)
    await get(1)
    stats = next(iter(cache.stats.functions.values()))
    assert stats.hits == {"memcached": 1}
    assert source.calls == 1


async def test_an_entry_expires_after_its_ttl_in_every_tier(make_cache: CacheFactory) -> None:
    cache = make_cache()
    source = Counter()
    get = cached_source(cache, source, ttl=0.3, early_refresh=None)
    assert (await get(1))["version"] == 1

    async def recomputed() -> bool:
        return (await get(1))["version"] == 2

    await wait_for(recomputed, within=3.0, interval=0.05)
    assert source.calls == 2


async def test_memory_expiry_on_an_injected_clock() -> None:
    now = [1000.0]
    source = Counter()
    async with Cache("clock-test", tiers=["memory"], clock=lambda: now[0]) as cache:
        get = cached_source(cache, source, ttl=60, early_refresh=None)
        await get(1)
        now[0] += 59.9
        await get(1)
        assert source.calls == 1
        now[0] += 0.1
        await get(1)
        assert source.calls == 2


async def test_a_hundred_concurrent_calls_on_a_cold_key_run_the_function_once(
    make_cache: CacheFactory,
) -> None:
    cache = make_cache()
    release = asyncio.Event()
    calls = 0

    @cached(cache=cache, ttl=30, key="slow:{item}")
    async def slow(item: int) -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return item * 2

    tasks = [asyncio.create_task(slow(21)) for _ in range(100)]

    async def all_waiting() -> bool:
        return calls == 1 and not any(task.done() for task in tasks)

    await wait_for(all_waiting)
    release.set()
    assert await asyncio.gather(*tasks) == [42] * 100
    assert calls == 1


def joined(cache: Cache, callers: int) -> Callable[[], Awaitable[bool]]:
    """Whether ``callers`` calls have missed memory: each joins the key's flight in that step."""

    async def condition() -> bool:
        return sum(stats.misses.get("memory", 0) for stats in cache.stats.functions.values()) == (
            callers
        )

    return condition


async def test_a_cancelled_waiter_leaves_the_computation_to_the_others(
    make_cache: CacheFactory,
) -> None:
    cache = make_cache()
    release = asyncio.Event()
    calls = 0

    @cached(cache=cache, ttl=30, key="k")
    async def slow() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "done"

    leader = asyncio.create_task(slow())

    async def computing() -> bool:
        return calls == 1

    await wait_for(computing)
    waiter = asyncio.create_task(slow())
    await wait_for(joined(cache, 2))
    waiter.cancel()
    release.set()
    assert await leader == "done"
    assert waiter.cancelled()
    assert calls == 1


async def test_when_the_first_caller_is_cancelled_the_others_start_over(
    make_cache: CacheFactory,
) -> None:
    cache = make_cache()
    calls = 0
    first_started, release = asyncio.Event(), asyncio.Event()

    @cached(cache=cache, ttl=30, key="k")
    async def slow() -> str:
        nonlocal calls
        calls += 1
        first_started.set()
        await release.wait()
        return "done"

    leader = asyncio.create_task(slow())
    await first_started.wait()
    waiters = [asyncio.create_task(slow()) for _ in range(5)]
    await wait_for(joined(cache, 6))
    leader.cancel()
    release.set()
    assert await asyncio.gather(*waiters) == ["done"] * 5
    assert leader.cancelled()
    assert calls == 2  # the cancelled one, then one of the waiters


async def test_an_exception_reaches_every_waiter_and_is_not_cached(
    make_cache: CacheFactory,
) -> None:
    cache = make_cache()
    calls = 0

    @cached(cache=cache, ttl=30, key="k")
    async def failing() -> str:
        nonlocal calls
        calls += 1
        raise RuntimeError("database down")

    results = await asyncio.gather(*(failing() for _ in range(5)), return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)
    assert calls == 1
    results = await asyncio.gather(failing(), return_exceptions=True)
    assert calls == 2


async def test_a_result_above_the_size_limit_is_returned_but_not_cached(
    make_cache: CacheFactory, redis: Redis
) -> None:
    cache = make_cache(max_value_bytes=1000)
    calls = 0

    @cached(cache=cache, ttl=30, key="big")
    async def big() -> str:
        nonlocal calls
        calls += 1
        return "x" * 5000

    assert await big() == "x" * 5000
    assert await big() == "x" * 5000
    assert calls == 2
    assert await redis.exists(cache.keyspace.record("big", 1)) == 0


async def test_a_value_too_large_for_memcached_is_refused_by_the_size_limit(
    make_cache: CacheFactory,
) -> None:
    cache = make_cache()  # the default limit, 1 MB, is memcached's item size
    calls = 0

    @cached(cache=cache, ttl=30, key="huge")
    async def huge() -> str:
        nonlocal calls
        calls += 1
        return "x" * 1_100_000

    await huge()
    await huge()
    assert calls == 2
    assert cache.memcached is not None
    assert cache.memcached.errors == 0


async def test_a_burst_of_cold_keys_on_a_fresh_cache_does_not_trip_the_breaker(
    started: Callable[..., Any],
) -> None:
    """Hundreds of first calls at once must queue for a few connections, not open hundreds
    (each a handshake on the loop) and trip the breaker. The timeout is generous: this is about
    connections and the breaker, not about speed on a busy CI machine."""
    cache = await started(remote_timeout=2.0)
    source = Counter()
    get = cached_source(cache, source)
    results = await asyncio.gather(*(get(item) for item in range(300)))
    assert [result["item"] for result in results] == list(range(300))
    assert cache.redis is not None
    assert cache.memcached is not None
    assert (cache.redis.errors, cache.memcached.errors) == (0, 0)
    assert cache.redis.available
    assert cache.memcached.available
    assert len(cache.redis.client.connection_pool._available_connections) <= 16
    assert source.calls == 300
    await get(299)
    assert source.calls == 300

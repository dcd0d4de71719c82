"""The stampede lock: a cold key is computed once per lock window across instances and processes,
and a caller waits for the holder a bounded time only."""

import asyncio
import sys
import time

from redis.asyncio import Redis

from core.cache import cached
from tests.core.cache.conftest import CacheFactory
from tests.core.cache.stampede_worker import LOCK_WAIT, expensive


async def test_two_instances_compute_a_cold_key_once(
    make_cache: CacheFactory, redis: Redis, namespace: str
) -> None:
    # A waiter gives up on the holder after lock_wait and computes itself (bounded below): a
    # generous one here, so that a slow machine cannot turn "once" into "twice".
    first, second = make_cache(lock_wait=LOCK_WAIT), make_cache(lock_wait=LOCK_WAIT)
    on_first, on_second = expensive(first, redis, namespace), expensive(second, redis, namespace)

    results = await asyncio.gather(
        *(on_first() for _ in range(100)), *(on_second() for _ in range(100))
    )

    assert {result["run"] for result in results} == {1}
    assert int(await redis.get(f"{namespace}:runs")) == 1


async def test_two_processes_compute_a_cold_key_once(
    make_cache: CacheFactory, redis: Redis, namespace: str
) -> None:
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.core.cache.stampede_worker",
        namespace,
        "100",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert worker.stdin is not None
    assert worker.stdout is not None
    async with asyncio.timeout(30):
        assert await worker.stdout.readline() == b"ready\n"
    report = expensive(make_cache(lock_wait=LOCK_WAIT), redis, namespace)

    worker.stdin.write(b"go\n")
    await worker.stdin.drain()
    results = await asyncio.gather(*(report() for _ in range(100)))
    async with asyncio.timeout(30):
        output, _ = await worker.communicate()

    assert worker.returncode == 0
    assert output.decode().strip() == "[1]"
    assert {result["run"] for result in results} == {1}
    assert int(await redis.get(f"{namespace}:runs")) == 1


async def test_a_caller_waits_for_a_stuck_lock_holder_a_bounded_time(
    make_cache: CacheFactory, redis: Redis
) -> None:
    cache = make_cache(lock_wait=0.3)
    calls = 0

    @cached(cache=cache, ttl=60, key="stuck")
    async def value() -> int:
        nonlocal calls
        calls += 1
        return 42

    # another instance took the lock and will never finish
    await redis.set(cache.keyspace.lock("stuck", 1), "someone-else", px=60_000)
    started = time.monotonic()
    assert await value() == 42
    waited = time.monotonic() - started
    assert 0.3 <= waited < 1.0
    assert calls == 1


async def test_the_lock_of_a_dead_holder_is_taken_over_when_it_expires(
    make_cache: CacheFactory, redis: Redis
) -> None:
    cache = make_cache(lock_wait=5)
    lock = cache.keyspace.lock("orphan", 1)

    @cached(cache=cache, ttl=60, key="orphan")
    async def value() -> str:
        holder = await redis.get(lock)
        return "computed under our lock" if holder not in (None, b"dead") else "no lock"

    await redis.set(lock, "dead", px=300)  # its holder crashed; the lock expires on its own
    started = time.monotonic()
    assert await value() == "computed under our lock"
    assert 0.25 <= time.monotonic() - started < 1.0  # not the whole lock_wait
    assert await redis.exists(lock) == 0  # released after


async def test_a_known_key_gone_from_redis_is_computed_once_again(
    make_cache: CacheFactory, redis: Redis, namespace: str
) -> None:
    # Both instances have seen the record, so they read it without taking the lock; when it is
    # gone, the lock is taken after the read, and the stampede is still held off.
    first = make_cache(lock_wait=LOCK_WAIT, tiers=["redis"])
    second = make_cache(lock_wait=LOCK_WAIT, tiers=["redis"])
    on_first, on_second = expensive(first, redis, namespace), expensive(second, redis, namespace)
    assert (await on_first())["run"] == 1
    assert (await on_second())["run"] == 1  # a hit: the second instance knows the key too

    assert await redis.delete(on_first.key()) == 1
    results = await asyncio.gather(
        *(on_first() for _ in range(50)), *(on_second() for _ in range(50))
    )

    assert {result["run"] for result in results} == {2}
    assert int(await redis.get(f"{namespace}:runs")) == 2

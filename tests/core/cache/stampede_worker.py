"""A second process for the stampede test: ``python -m tests.core.cache.stampede_worker NS N``.

It prints ``ready``, waits for a line on its standard input, then makes N concurrent calls of the
same cached function on a cold key; the function counts its runs in ``NS:runs`` (shared with the
test's own process). It prints the distinct results it got and exits.
"""

from __future__ import annotations

import asyncio
import sys

from redis.asyncio import Redis

from core.cache import Cache, cached

REDIS_URL = "redis://127.0.0.1:6379/0"
MEMCACHED_URL = "memcached://127.0.0.1:11211"
QUERY_SECONDS = 0.2  # how long the slow query the lock protects the database from takes
LOCK_WAIT = 10.0  # how long a waiter waits for the lock holder (far longer than the query)


def expensive(cache: Cache, redis: Redis, namespace: str):  # type: ignore[no-untyped-def]
    """The cached function both processes call: slow, and counting its runs in Redis."""

    @cached(cache=cache, ttl=60, key="report")
    async def report() -> dict[str, int]:
        runs = await redis.incr(f"{namespace}:runs")
        await asyncio.sleep(QUERY_SECONDS)  # the slow query itself
        return {"run": runs}

    return report


async def main(namespace: str, calls: int) -> None:
    async with (
        Redis.from_url(REDIS_URL) as redis,
        Cache(
            namespace, redis_url=REDIS_URL, memcached_url=MEMCACHED_URL, lock_wait=LOCK_WAIT
        ) as cache,
    ):
        report = expensive(cache, redis, namespace)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        results = await asyncio.gather(*(report() for _ in range(calls)))
        print(sorted({result["run"] for result in results}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))

"""Per-call cost of ``@cached`` next to cashews and aiocache, in one run, on the same servers.

Run from the project root (cashews and aiocache are the ``bench`` extra)::

    .venv/bin/python -m perf.bench_cache [--calls 20000] [--remote-calls 2000] [--rounds 5]

Three scenarios, each for the three libraries, on a function returning a small dict:

- in-process hit: the key is in the library's memory backend;
- Redis hit: the key is in Redis (127.0.0.1:6379) and nowhere nearer;
- miss: every call a new key, so each one looks up, runs the function and stores the result in
  Redis (aioshop also fills its in-process tier and takes its stampede lock; a second row shows
  aioshop without the lock).

Calls are sequential (one at a time, the latency of one call, not throughput), on uvloop, after a
warm-up; the libraries take turns round by round, and each figure is the median of its rounds.
The baseline is the function called without any cache. Only 127.0.0.1 is contacted; the run's
Redis keys are deleted at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

REDIS_URL = "redis://127.0.0.1:6379/0"
ROW = {"id": 42, "name": "Desk lamp", "price_cents": 1999, "currency": "USD", "tags": ["a", "b"]}
LIBRARIES = ("aioshop", "cashews", "aiocache")
UNLOCKED = "aioshop, lock=False"  # an extra row of the miss scenario: what the lock costs

Call = Callable[[int], Awaitable[Any]]


async def source(item: int) -> dict[str, Any]:
    """The function being cached: a small dict, as a repository would return."""
    return {**ROW, "id": item}


@dataclass
class Scenario:
    """One row of the table: a per-call figure (microseconds) per library."""

    name: str
    hot: bool  # the same key every call (a hit) or a new key every call (a miss)
    calls: dict[str, Call] = field(default_factory=dict)
    micros: dict[str, float] = field(default_factory=dict)


async def one_round(call: Call, *, keys: Iterator[int] | None, count: int) -> float:
    """Mean µs of ``count`` sequential calls: all on key 0, or each on the next of ``keys``."""
    started = time.perf_counter()
    if keys is None:
        for _ in range(count):
            await call(0)
    else:
        for _ in range(count):
            await call(next(keys))
    return (time.perf_counter() - started) / count * 1e6


async def measure(scenario: Scenario, *, count: int, rounds: int) -> None:
    """Warm every library up, then time them round by round, interleaved (so that drift in the
    machine's load falls on all of them); keep each one's median."""
    keys = {name: iter(range(10**9)) if not scenario.hot else None for name in scenario.calls}
    for name, call in scenario.calls.items():
        await one_round(call, keys=keys[name], count=min(count, 500))
    samples: dict[str, list[float]] = {name: [] for name in scenario.calls}
    for _ in range(rounds):
        for name, call in scenario.calls.items():
            samples[name].append(await one_round(call, keys=keys[name], count=count))
    scenario.micros = {name: statistics.median(values) for name, values in samples.items()}


async def build(namespace: str, closers: list[Callable[[], Awaitable[object]]]) -> list[Scenario]:
    """The decorated functions of every scenario and library."""
    import aiocache
    import cashews

    from core.cache import Cache, cached

    memory_only = Cache(f"{namespace}-mem", tiers=["memory"])
    redis_only = Cache(namespace, redis_url=REDIS_URL, tiers=["redis"])
    tiered = Cache(namespace, redis_url=REDIS_URL, tiers=["memory", "redis"])
    for cache in (memory_only, redis_only, tiered):
        await cache.start()  # as cache_ctx does: connections opened, invalidations listened to
        closers.append(cache.close)

    cashews_memory, cashews_redis = cashews.Cache(), cashews.Cache()
    cashews_memory.setup("mem://")
    cashews_redis.setup(REDIS_URL, client_side=False)
    closers.extend([cashews_memory.close, cashews_redis.close])

    redis_options = {"endpoint": "127.0.0.1", "port": 6379, "namespace": f"{namespace}:aiocache"}

    def key(prefix: str) -> Callable[..., str]:
        return lambda _function, item: f"{prefix}:{item}"

    hit_memory = Scenario("in-process hit", hot=True)
    hit_memory.calls = {
        "aioshop": cached(cache=memory_only, ttl=600, key="mem:{item}")(source),
        "cashews": cashews_memory(ttl=600, key="mem:{item}")(source),
        "aiocache": aiocache.cached(ttl=600, key_builder=key("mem"))(source),
    }
    hit_redis = Scenario("Redis hit", hot=True)
    hit_redis.calls = {
        "aioshop": cached(cache=redis_only, ttl=600, key="redis:{item}")(source),
        "cashews": cashews_redis(ttl=600, key=f"{namespace}:cashews:redis:{{item}}")(source),
        "aiocache": aiocache.cached(
            ttl=600, key_builder=key("redis"), cache=aiocache.Cache.REDIS, **redis_options
        )(source),
    }
    miss = Scenario("miss (stored in Redis)", hot=False)
    miss.calls = {
        "aioshop": cached(cache=tiered, ttl=600, key="miss:{item}")(source),
        "cashews": cashews_redis(ttl=600, key=f"{namespace}:cashews:miss:{{item}}")(source),
        "aiocache": aiocache.cached(
            ttl=600, key_builder=key("miss"), cache=aiocache.Cache.REDIS, **redis_options
        )(source),
    }
    miss.calls[UNLOCKED] = cached(cache=tiered, ttl=600, key="nolock:{item}", lock=False)(source)
    return [hit_memory, hit_redis, miss]


async def bench(args: argparse.Namespace, namespace: str) -> tuple[float, list[Scenario]]:
    """Measure the baseline and every scenario; close every client."""
    closers: list[Callable[[], Awaitable[object]]] = []
    try:
        scenarios = await build(namespace, closers)
        baseline = Scenario("baseline", hot=True, calls={"aioshop": source})
        await measure(baseline, count=args.calls, rounds=args.rounds)
        for scenario in scenarios:
            count = args.calls if scenario.name == "in-process hit" else args.remote_calls
            await measure(scenario, count=count, rounds=args.rounds)
        return baseline.micros["aioshop"], scenarios
    finally:
        for close in closers:
            await close()
        await cleanup(namespace)


async def cleanup(namespace: str) -> None:
    """Delete every key this run wrote to Redis."""
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    finally:
        await client.aclose()


def report(baseline: float, scenarios: list[Scenario], args: argparse.Namespace) -> None:
    """The table: µs per call per library, and each library's ratio to aioshop."""
    print(f"\n{'µs per call':<28}" + "".join(f"{name:>12}" for name in LIBRARIES))
    for scenario in scenarios:
        cells = "".join(f"{scenario.micros[name]:>12.1f}" for name in LIBRARIES)
        print(f"{scenario.name:<28}{cells}")
        if UNLOCKED in scenario.micros:
            print(f"{'  ' + UNLOCKED:<28}{scenario.micros[UNLOCKED]:>12.1f}")
    print(f"\n{'ratio to aioshop':<28}" + "".join(f"{name:>12}" for name in LIBRARIES))
    for scenario in scenarios:
        ours = scenario.micros["aioshop"]
        cells = "".join(f"{scenario.micros[name] / ours:>11.2f}x" for name in LIBRARIES)
        print(f"{scenario.name:<28}{cells}")
    print(
        f"\nbaseline: the uncached function, {baseline:.2f} µs per call. Sequential calls on "
        f"uvloop, median of {args.rounds} interleaved rounds of {args.calls} (in-process) or "
        f"{args.remote_calls} (Redis) calls; Redis on 127.0.0.1. aioshop's in-process hit uses a "
        "cache with only the in-process tier; its Redis hit a cache with only Redis (the record "
        "and its invalidation versions in one round trip); its miss takes the stampede lock in "
        "that same round trip, releases it with the write, and fills the in-process tier too."
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; exit code 2 if a server is unreachable."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per round, in-process")
    parser.add_argument("--remote-calls", type=int, default=2_000, help="calls per round, Redis")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure (median)")
    args = parser.parse_args(argv)
    if min(args.calls, args.remote_calls, args.rounds) < 1:
        parser.error("--calls, --remote-calls and --rounds must be at least 1")

    import uvloop

    namespace = f"bench-cache-{uuid.uuid4().hex[:8]}"
    try:
        baseline, scenarios = uvloop.run(bench(args, namespace))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, ConnectionError) as exc:
        print(f"benchmark failed: {exc!r}", file=sys.stderr)
        return 2
    report(baseline, scenarios, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

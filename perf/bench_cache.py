"""Per-call cost of ``@cached`` next to cashews and aiocache, in one run, on the same servers.

Run from the project root (cashews and aiocache are the ``bench`` extra)::

    .venv/bin/python -m perf.bench_cache [--calls 20000] [--remote-calls 2000] [--rounds 5]

Four scenarios, on a function returning a small dict, for the three libraries (the memcached
one for aioshop only):

- in-process hit: the key is in the library's memory backend;
- Redis hit: the key is in Redis (127.0.0.1:6379) and nowhere nearer;
- memcached hit: the key is in memcached (127.0.0.1:11211), aioshop with only that tier (so
  without Redis's invalidation versions to read);
- miss: every call a new key, so each one looks up, runs the function and stores the result in
  Redis (aioshop also fills its in-process tier and takes its stampede lock; a second row shows
  aioshop without the lock).

``measure_all()`` returns the figures as data (``Row``), for a table runner to import.

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
MEMCACHED_URL = "memcached://127.0.0.1:11211"
ROW = {"id": 42, "name": "Desk lamp", "price_cents": 1999, "currency": "USD", "tags": ["a", "b"]}
LIBRARIES = ("aioshop", "cashews", "aiocache")
UNLOCKED = "aioshop, lock=False"  # an extra row of the miss scenario: what the lock costs

Call = Callable[[int], Awaitable[Any]]


async def source(item: int) -> dict[str, Any]:
    """The function being cached: a small dict, as a repository would return."""
    return {**ROW, "id": item}


@dataclass(frozen=True)
class Row:
    """One figure of the table: aioshop's µs per call, and the same calls' through the peers
    (``cashews``, ``aiocache``, and variants of aioshop such as ``UNLOCKED``)."""

    name: str
    micros: float
    peers: dict[str, float] = field(default_factory=dict)


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
    memcached_only = Cache(namespace, memcached_url=MEMCACHED_URL, tiers=["memcached"])
    for cache in (memory_only, redis_only, tiered, memcached_only):
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
    hit_memcached = Scenario("memcached hit", hot=True)
    hit_memcached.calls = {
        "aioshop": cached(cache=memcached_only, ttl=60, key="memcached:{item}")(source),
    }
    return [hit_memory, hit_redis, hit_memcached, miss]


async def measure_all(
    *, calls: int = 20_000, remote_calls: int = 2_000, rounds: int = 5
) -> list[Row]:
    """Measure the baseline (the uncached function) and every scenario, in this event loop;
    ``calls`` per round in process, ``remote_calls`` per round on a server, the median of
    ``rounds``. Raises ``OSError`` (or ``ConnectionError``) if a server is unreachable."""
    namespace = f"bench-cache-{uuid.uuid4().hex[:8]}"
    closers: list[Callable[[], Awaitable[object]]] = []
    try:
        scenarios = await build(namespace, closers)
        baseline = Scenario("baseline", hot=True, calls={"aioshop": source})
        await measure(baseline, count=calls, rounds=rounds)
        for scenario in scenarios:
            count = calls if scenario.name == "in-process hit" else remote_calls
            await measure(scenario, count=count, rounds=rounds)
    finally:
        for close in closers:
            await close()
        await cleanup(namespace)
    rows = [Row("baseline", baseline.micros["aioshop"])]
    for scenario in scenarios:
        peers = {name: micros for name, micros in scenario.micros.items() if name != "aioshop"}
        rows.append(Row(scenario.name, scenario.micros["aioshop"], peers))
    return rows


async def cleanup(namespace: str) -> None:
    """Delete every key this run wrote to Redis."""
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    finally:
        await client.aclose()


def report(rows: list[Row], args: argparse.Namespace) -> None:
    """The table: µs per call per library, and each library's ratio to aioshop."""
    baseline, scenarios = rows[0], rows[1:]

    def figures(row: Row) -> dict[str, float]:
        return {"aioshop": row.micros, **row.peers}

    print(f"\n{'µs per call':<28}" + "".join(f"{name:>12}" for name in LIBRARIES))
    for row in scenarios:
        found = figures(row)
        cells = "".join(
            f"{found[name]:>12.1f}" if name in found else f"{'-':>12}" for name in LIBRARIES
        )
        print(f"{row.name:<28}{cells}")
        if UNLOCKED in found:
            print(f"{'  ' + UNLOCKED:<28}{found[UNLOCKED]:>12.1f}")
    print(f"\n{'ratio to aioshop':<28}" + "".join(f"{name:>12}" for name in LIBRARIES))
    for row in scenarios:
        found = figures(row)
        cells = "".join(
            f"{found[name] / row.micros:>11.2f}x" if name in found else f"{'-':>12}"
            for name in LIBRARIES
        )
        print(f"{row.name:<28}{cells}")
    print(
        f"\nbaseline: the uncached function, {baseline.micros:.2f} µs per call. Sequential calls "
        f"on uvloop, median of {args.rounds} interleaved rounds of {args.calls} (in-process) or "
        f"{args.remote_calls} (Redis, memcached) calls; servers on 127.0.0.1. aioshop's "
        "in-process hit uses a cache with only the in-process tier; its Redis hit a cache with "
        "only Redis (the record and its invalidation versions in one MGET); its memcached hit a "
        "cache with only memcached; its miss reads the record, the versions and takes the "
        "stampede lock in one round trip, releases it with the write, and fills the in-process "
        "tier too."
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

    try:
        rows = uvloop.run(
            measure_all(calls=args.calls, remote_calls=args.remote_calls, rounds=args.rounds)
        )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, ConnectionError) as exc:
        print(f"benchmark failed: {exc!r}", file=sys.stderr)
        return 2
    report(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The rows of the parts measured alone: the cache decorator beside cashews and aiocache, and the
bus beside raw aiormq (``perf.bench_cache``, ``perf.bench_bus``: each measures its peers in the
same run, on the same servers)."""

from __future__ import annotations

import asyncio

from perf import bench_cache
from perf.suite.table import Row

__all__ = ["cache_rows"]

IN_PROCESS_TARGET_US = 2.0


def _cache_row(row: bench_cache.Row) -> Row:
    aiocache = row.peers.get("aiocache")
    target, met = "", None
    if row.name == "in-process hit":
        target, met = f"<= {IN_PROCESS_TARGET_US:g} us", row.micros <= IN_PROCESS_TARGET_US
    elif row.name.startswith(("Redis hit", "miss")) and aiocache:
        target, met = "no slower than aiocache", row.micros <= aiocache
    peers = ", ".join(f"{name} {micros:.1f} us" for name, micros in row.peers.items())
    return Row(
        group="cache",
        name=f"@cached {row.name}",
        throughput=row.micros,
        unit="us/call",
        ratio=aiocache / row.micros if aiocache else None,
        baseline="aiocache (its us / ours)" if aiocache else "",
        target=target,
        met=met,
        note=peers or "no peer has this tier",
    )


def cache_rows(*, calls: int = 20_000, remote_calls: int = 2_000, rounds: int = 5) -> list[Row]:
    """Per-call cost of ``@cached`` hits and misses, beside cashews and aiocache."""
    measured = asyncio.run(
        bench_cache.measure_all(calls=calls, remote_calls=remote_calls, rounds=rounds)
    )
    return [_cache_row(row) for row in measured if row.name != "baseline"]

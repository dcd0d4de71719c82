"""The rows of the parts measured alone: the cache decorator beside cashews and aiocache, and the
bus beside raw aiormq (``perf.bench_cache``, ``perf.bench_bus``: each measures its peers in the
same run, on the same servers)."""

from __future__ import annotations

import uvloop

from perf import bench_bus, bench_cache
from perf.suite.table import Row

__all__ = ["bus_rows", "cache_rows"]

BUS_TARGET = 0.9

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
    measured = uvloop.run(
        bench_cache.measure_all(calls=calls, remote_calls=remote_calls, rounds=rounds)
    )
    return [_cache_row(row) for row in measured if row.name != "baseline"]


def _bus_row(row: bench_bus.Row) -> Row:
    relay = row.name.startswith("outbox relay")
    target, met = "", None
    if row.name == "core.bus":
        target = f">= {BUS_TARGET:g}x raw aiormq"
        met = row.ratio is not None and row.ratio >= BUS_TARGET
    return Row(
        group="bus",
        name=row.name + ("" if relay else ", publish+consume with confirms"),
        throughput=row.rate,
        unit="events/s" if relay else "msg/s",
        p50_ms=row.p50_ms,
        p99_ms=row.p99_ms,
        ratio=row.ratio,
        baseline="raw aiormq" if row.ratio is not None else "",
        target=target,
        met=met,
        note=("p50/p99: lag from commit to consumer; " if relay else "") + row.note,
    )


def bus_rows(*, seconds: float, rounds: int = 3) -> list[Row]:
    """Publish+consume with confirms beside raw aiormq, and the outbox relay's lag."""
    measured = uvloop.run(bench_bus.measure_all(seconds, rounds=rounds))
    return [_bus_row(row) for row in measured]

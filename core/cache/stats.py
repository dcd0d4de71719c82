"""Per-function cache statistics, read by ``/metrics`` and by code (hit ratio per tier).

A hit on the in-process tier is a few microseconds, so the hot path only adds to plain integers; a
Prometheus collector turns them into series when ``/metrics`` is scraped:

- ``cache_hits_total{function, tier}``, ``cache_misses_total{function, tier}``: a call that misses
  the in-process tier and hits Redis counts a memory miss and a Redis hit;
- ``cache_loads_total{function}``: how often the function itself ran;
- ``cache_evictions_total{function, tier}``: entries pushed out of the in-process tier by its
  bounds;
- ``cache_invalid_records_total{function, tier}``: records found but not accepted (foreign data);
- ``cache_latency_seconds{function, outcome}``: a call's duration, ``outcome`` the tier that
  answered or ``miss``;
- ``cache_tier_errors_total{tier}``, ``cache_tier_up{tier}``: failed remote operations and
  whether the tier's circuit breaker is closed; ``cache_tier_congested_total{tier}``: operations
  skipped because the connections were all busy for longer than the timeout;
- ``cache_memory_entries``, ``cache_memory_bytes``: what the in-process tier holds.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from core.cache.memory import MemoryTier
from core.cache.remote import RemoteTier

__all__ = ["CACHE_LATENCY_BUCKETS", "CacheCollector", "CacheStats", "FunctionStats", "Latency"]

CACHE_LATENCY_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class Latency:
    """A histogram as plain numbers (``CACHE_LATENCY_BUCKETS``)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(CACHE_LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        self.counts[bisect_left(CACHE_LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts per upper bound, Prometheus style."""
        result: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*CACHE_LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            result.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return result


class FunctionStats:
    """What one decorated function's calls found in each tier."""

    __slots__ = ("evictions", "hits", "invalid", "latency", "loads", "misses", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits: dict[str, int] = {}
        self.misses: dict[str, int] = {}
        self.invalid: dict[str, int] = {}
        self.evictions = 0
        self.loads = 0
        self.latency: dict[str, Latency] = {}

    def hit(self, tier: str) -> None:
        """Count a hit in ``tier``."""
        self.hits[tier] = self.hits.get(tier, 0) + 1

    def miss(self, tier: str) -> None:
        """Count a miss in ``tier``."""
        self.misses[tier] = self.misses.get(tier, 0) + 1

    def observe(self, outcome: str, seconds: float) -> None:
        """Count a call that ``outcome`` (a tier name or ``miss``) answered in ``seconds``."""
        latency = self.latency.get(outcome)
        if latency is None:
            latency = self.latency[outcome] = Latency()
        latency.observe(seconds)

    def hit_ratio(self) -> dict[str, float]:
        """Hits over lookups, per tier that was looked in."""
        ratios = {}
        for tier in sorted(self.hits.keys() | self.misses.keys()):
            hits = self.hits.get(tier, 0)
            ratios[tier] = hits / (hits + self.misses.get(tier, 0))
        return ratios


class CacheStats:
    """The statistics of every function cached through one ``Cache``."""

    def __init__(self) -> None:
        self.functions: dict[str, FunctionStats] = {}

    def function(self, name: str) -> FunctionStats:
        """The statistics of the function called ``name`` (created on first use)."""
        stats = self.functions.get(name)
        if stats is None:
            stats = self.functions[name] = FunctionStats(name)
        return stats

    def evicted(self, owner: str) -> None:
        """Count an entry of ``owner`` evicted from the in-process tier."""
        self.function(owner).evictions += 1

    def hit_ratio(self) -> dict[str, dict[str, float]]:
        """``{function: {tier: hits / lookups}}``, for dashboards."""
        return {name: stats.hit_ratio() for name, stats in sorted(self.functions.items())}


class CacheCollector(Collector):
    """Exposes ``CacheStats`` and the tiers' health in a Prometheus registry."""

    def __init__(
        self,
        stats: CacheStats,
        *,
        memory: MemoryTier | None,
        remote: Callable[[], Sequence[RemoteTier]],
    ) -> None:
        self._stats = stats
        self._memory = memory
        self._remote = remote

    def collect(self) -> Iterator[Metric]:
        """The current values."""
        labels = ["function", "tier"]
        hits = CounterMetricFamily("cache_hits", "Lookups answered by a tier", labels=labels)
        misses = CounterMetricFamily(
            "cache_misses", "Lookups a tier could not answer", labels=labels
        )
        evictions = CounterMetricFamily(
            "cache_evictions", "Entries evicted by the in-process bounds", labels=labels
        )
        invalid = CounterMetricFamily(
            "cache_invalid_records", "Records found but not accepted", labels=labels
        )
        loads = CounterMetricFamily(
            "cache_loads", "Runs of the cached function", labels=["function"]
        )
        latency = HistogramMetricFamily(
            "cache_latency_seconds", "Duration of cached calls", labels=["function", "outcome"]
        )
        for name, stats in sorted(self._stats.functions.items()):
            for tier, count in stats.hits.items():
                hits.add_metric([name, tier], count)
            for tier, count in stats.misses.items():
                misses.add_metric([name, tier], count)
            for tier, count in stats.invalid.items():
                invalid.add_metric([name, tier], count)
            evictions.add_metric([name, "memory"], stats.evictions)
            loads.add_metric([name], stats.loads)
            for outcome, histogram in stats.latency.items():
                latency.add_metric([name, outcome], histogram.buckets(), histogram.total)
        yield from (hits, misses, evictions, invalid, loads, latency)

        errors = CounterMetricFamily(
            "cache_tier_errors", "Failed operations on a remote tier", labels=["tier"]
        )
        congested = CounterMetricFamily(
            "cache_tier_congested",
            "Operations skipped after waiting too long for a connection",
            labels=["tier"],
        )
        up = GaugeMetricFamily(
            "cache_tier_up", "1 while the tier's breaker is closed", labels=["tier"]
        )
        for remote in self._remote():
            errors.add_metric([remote.name], remote.errors)
            congested.add_metric([remote.name], remote.congested)
            up.add_metric([remote.name], 1.0 if remote.available else 0.0)
        yield from (errors, congested, up)
        if self._memory is not None:
            yield GaugeMetricFamily(
                "cache_memory_entries", "Entries in the in-process tier", value=len(self._memory)
            )
            yield GaugeMetricFamily(
                "cache_memory_bytes",
                "Bytes held by the in-process tier",
                value=self._memory.size_bytes,
            )

"""Bus metrics: published, consumed, retried, parked, handler latency, outbox lag."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from core.metrics import LATENCY_BUCKETS

__all__ = ["BusMetrics"]


class _Tally:
    """A labelled counter and the count the bus keeps for it, copied into it at each scrape."""

    __slots__ = ("child", "count")

    def __init__(self, child: Counter) -> None:
        self.child = child
        self.count = 0

    def sync(self) -> None:
        self.child._value.set(self.count)


class _Latencies:
    """A histogram's buckets and sum as the bus keeps them, copied into it at each scrape."""

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Histogram) -> None:
        self.child = child
        self.bounds = list(child._upper_bounds)  # ends with +Inf
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # The first bucket whose bound is >= seconds, as Histogram.observe picks it.
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def sync(self) -> None:
        for bucket, count in zip(self.child._buckets, self.counts, strict=True):
            bucket.set(count)
        self.child._sum.set(self.total)


class _Synced(Collector):
    """Exposes the bus's counters and histograms after copying its own counts into them."""

    def __init__(self, metrics: BusMetrics, wrapped: list[Counter | Histogram]) -> None:
        self._metrics = metrics
        self._wrapped = wrapped

    def describe(self) -> Iterable[Metric]:
        for metric in self._wrapped:
            yield from metric.describe()

    def collect(self) -> Iterable[Metric]:
        self._metrics.sync()
        for metric in self._wrapped:
            yield from metric.collect()


class BusMetrics:
    """Prometheus series of one service's bus traffic (in its app's registry).

    The per-message series (published, consumed and their latencies) are counted in plain
    Python numbers on the event loop and copied into the Prometheus objects when the registry is
    scraped: a ``labels()`` lookup and the lock of every ``inc``/``observe`` cost more than the
    rest of a message's bookkeeping. The series and their exposition are unchanged.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry(auto_describe=False)
        self._published = Counter(
            "bus_published", "Events published (confirmed)", ["type"], registry=None
        )
        self._publish_latency = Histogram(
            "bus_publish_duration_seconds",
            "Time to a publisher confirm",
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self._consumed = Counter(
            "bus_consumed", "Events handled successfully", ["queue", "type"], registry=None
        )
        self._retried = Counter(
            "bus_retried",
            "Deliveries that failed and will be retried",
            ["queue", "type"],
            registry=None,
        )
        self._parked = Counter(
            "bus_parked",
            "Messages parked after their last attempt",
            ["queue", "type"],
            registry=None,
        )
        self._handler_latency = Histogram(
            "bus_handler_duration_seconds",
            "Handler latency",
            ["queue"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        registry.register(
            _Synced(
                self,
                [
                    self._published,
                    self._publish_latency,
                    self._consumed,
                    self._retried,
                    self._parked,
                    self._handler_latency,
                ],
            )
        )
        self.outbox_lag = Gauge(
            "bus_outbox_lag_seconds", "Age of the oldest unpublished outbox row", registry=registry
        )
        self.outbox_pending = Gauge(
            "bus_outbox_pending", "Unpublished outbox rows", registry=registry
        )
        self.totals = {"published": 0, "consumed": 0, "retried": 0, "parked": 0}
        self._published_by_type: dict[str, _Tally] = {}
        self._publish_latencies = _Latencies(self._publish_latency)
        self._consumed_by_key: dict[tuple[str, str], _Tally] = {}
        self._handler_latencies: dict[str, _Latencies] = {}

    def published(self, event_type: str, seconds: float) -> None:
        """Count a confirmed publish."""
        tally = self._published_by_type.get(event_type)
        if tally is None:
            tally = self._published_by_type[event_type] = _Tally(self._published.labels(event_type))
        tally.count += 1
        self._publish_latencies.observe(seconds)
        self.totals["published"] += 1

    def consumed(self, queue: str, event_type: str, seconds: float) -> None:
        """Count a successfully handled message."""
        tally = self._consumed_by_key.get((queue, event_type))
        if tally is None:
            tally = self._consumed_by_key[queue, event_type] = _Tally(
                self._consumed.labels(queue, event_type)
            )
        tally.count += 1
        latencies = self._handler_latencies.get(queue)
        if latencies is None:
            latencies = self._handler_latencies[queue] = _Latencies(
                self._handler_latency.labels(queue)
            )
        latencies.observe(seconds)
        self.totals["consumed"] += 1

    def retried(self, queue: str, event_type: str) -> None:
        """Count a failed delivery that will be retried."""
        self._retried.labels(queue, event_type).inc()
        self.totals["retried"] += 1

    def parked(self, queue: str, event_type: str) -> None:
        """Count a parked message."""
        self._parked.labels(queue, event_type).inc()
        self.totals["parked"] += 1

    def sync(self) -> None:
        """Copy the counts kept per message into the Prometheus series (done at each scrape)."""
        for tally in [*self._published_by_type.values(), *self._consumed_by_key.values()]:
            tally.sync()
        self._publish_latencies.sync()
        for latencies in list(self._handler_latencies.values()):
            latencies.sync()

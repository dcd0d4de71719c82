"""Bus metrics: published, consumed, retried, parked, handler latency, outbox lag."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from core.metrics import LATENCY_BUCKETS

__all__ = ["BusMetrics"]


class BusMetrics:
    """Prometheus series of one service's bus traffic (in its app's registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry(auto_describe=False)
        self._published = Counter(
            "bus_published", "Events published (confirmed)", ["type"], registry=registry
        )
        self._publish_latency = Histogram(
            "bus_publish_duration_seconds",
            "Time to a publisher confirm",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._consumed = Counter(
            "bus_consumed", "Events handled successfully", ["queue", "type"], registry=registry
        )
        self._retried = Counter(
            "bus_retried",
            "Deliveries that failed and will be retried",
            ["queue", "type"],
            registry=registry,
        )
        self._parked = Counter(
            "bus_parked",
            "Messages parked after their last attempt",
            ["queue", "type"],
            registry=registry,
        )
        self._handler_latency = Histogram(
            "bus_handler_duration_seconds",
            "Handler latency",
            ["queue"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.outbox_lag = Gauge(
            "bus_outbox_lag_seconds", "Age of the oldest unpublished outbox row", registry=registry
        )
        self.outbox_pending = Gauge(
            "bus_outbox_pending", "Unpublished outbox rows", registry=registry
        )
        self.totals = {"published": 0, "consumed": 0, "retried": 0, "parked": 0}

    def published(self, event_type: str, seconds: float) -> None:
        """Count a confirmed publish."""
        self._published.labels(event_type).inc()
        self._publish_latency.observe(seconds)
        self.totals["published"] += 1

    def consumed(self, queue: str, event_type: str, seconds: float) -> None:
        """Count a successfully handled message."""
        self._consumed.labels(queue, event_type).inc()
        self._handler_latency.labels(queue).observe(seconds)
        self.totals["consumed"] += 1

    def retried(self, queue: str, event_type: str) -> None:
        """Count a failed delivery that will be retried."""
        self._retried.labels(queue, event_type).inc()
        self.totals["retried"] += 1

    def parked(self, queue: str, event_type: str) -> None:
        """Count a parked message."""
        self._parked.labels(queue, event_type).inc()
        self.totals["parked"] += 1

"""Business metrics of the orders service, in the application's Prometheus registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["OrderMetrics"]

SAGA_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class OrderMetrics:
    """Orders placed/confirmed/rejected/cancelled/shipped, revenue, saga duration, and the
    saga backlog.

    The counters count a transition once it has committed, in the instance that committed it:
    the saga row's lock serializes an order's writers and a decision on an order already in
    that state changes nothing (no outcome), so a redelivered answer or a replica racing for the
    same step never counts twice; sum them over instances. The backlog gauges are the whole
    database's (every replica reports the same figure: take ``max`` over instances), refreshed
    by ``services.orders.health``.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.placed = Counter("orders_placed", "Orders placed", registry=registry)
        self.confirmed = Counter("orders_confirmed", "Orders confirmed", registry=registry)
        self.rejected = Counter(
            "orders_rejected", "Orders rejected, by reason", ["reason"], registry=registry
        )
        self.cancelled = Counter(
            "orders_cancelled",
            "Orders cancelled, by the status they had",
            ["from_status"],
            registry=registry,
        )
        self.shipped = Counter("orders_shipped", "Orders shipped", registry=registry)
        self.revenue = Counter(
            "orders_revenue_cents",
            "Revenue of confirmed orders, in minor units",
            ["currency"],
            registry=registry,
        )
        self.refunded = Counter(
            "orders_refunded_cents",
            "Payments refunded, in minor units",
            ["currency"],
            registry=registry,
        )
        self.saga_pending = Gauge(
            "orders_saga_pending", "Sagas not finished (step other than done)", registry=registry
        )
        self.saga_oldest_pending = Gauge(
            "orders_saga_oldest_pending_seconds",
            "Age of the oldest unfinished saga (0 when none)",
            registry=registry,
        )
        self.saga_duration = Histogram(
            "orders_saga_duration_seconds",
            "From placement to the saga's outcome (confirmed, rejected or cancelled)",
            ["outcome"],
            buckets=SAGA_BUCKETS,
            registry=registry,
        )

"""The gateway's metrics, beside core's per-route request metrics in the same registry.

Instances are labelled ``<upstream>-<index>`` (their order in ``UPSTREAM_<NAME>``), never by
host: ``/metrics`` must not reveal internal addresses.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from core.metrics import LATENCY_BUCKETS

__all__ = ["GatewayMetrics"]


class GatewayMetrics:
    """Counters and gauges of proxying, balancing, load shedding, rate limiting and edge
    authentication."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.upstream_requests = Counter(
            "gateway_upstream_requests",
            "Attempts sent to an upstream instance, by outcome (status code or failure kind)",
            ["route", "upstream", "instance", "outcome"],
            registry=registry,
        )
        self.upstream_latency = Histogram(
            "gateway_upstream_response_seconds",
            "Time from sending an attempt to the upstream's response headers",
            ["route", "upstream"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "gateway_retries",
            "Attempts retried on another instance, by reason",
            ["upstream", "reason"],
            registry=registry,
        )
        self.retry_budget_exhausted = Counter(
            "gateway_retry_budget_exhausted",
            "Retries refused because the upstream's retry budget was spent",
            ["upstream"],
            registry=registry,
        )
        self.no_instance = Counter(
            "gateway_no_healthy_instance",
            "Requests answered 503 because no instance of the upstream was available",
            ["upstream"],
            registry=registry,
        )
        self.breaker_state = Gauge(
            "gateway_breaker_state",
            "Circuit breaker state per instance: 0 closed, 1 half-open, 2 open",
            ["upstream", "instance"],
            registry=registry,
        )
        self.breaker_transitions = Counter(
            "gateway_breaker_transitions",
            "Circuit breaker state changes per instance, by the state entered",
            ["upstream", "instance", "state"],
            registry=registry,
        )
        self.instance_healthy = Gauge(
            "gateway_instance_healthy",
            "1 while the instance passes its active health checks",
            ["upstream", "instance"],
            registry=registry,
        )
        self.outstanding = Gauge(
            "gateway_instance_outstanding",
            "Requests in flight to the instance",
            ["upstream", "instance"],
            registry=registry,
        )
        self.upstream_in_flight = Gauge(
            "gateway_upstream_in_flight",
            "Proxied requests in flight to the upstream (all instances; streams apart)",
            ["upstream"],
            registry=registry,
        )
        self.upstream_queued = Gauge(
            "gateway_upstream_queued",
            "Requests waiting for a place under the upstream's concurrency limit",
            ["upstream"],
            registry=registry,
        )
        self.upstream_shed = Counter(
            "gateway_upstream_shed",
            "Requests answered 503 at the upstream's concurrency limit, by reason "
            "(queue_full: refused at once, queue_timeout: waited in vain)",
            ["upstream", "reason"],
            registry=registry,
        )
        self.upstream_panic = Counter(
            "gateway_upstream_panic_routed",
            "Requests sent to an instance out of rotation because no instance of its upstream "
            "passed its readiness check while some still answered it (panic routing)",
            ["upstream"],
            registry=registry,
        )
        self.ratelimit = Counter(
            "gateway_ratelimit_decisions",
            "Rate-limit decisions by policy and result (allowed, limited)",
            ["policy", "result"],
            registry=registry,
        )
        self.ratelimit_failopen = Counter(
            "gateway_ratelimit_failopen",
            "Requests let through unchecked because Redis could not be asked",
            ["reason"],
            registry=registry,
        )
        self.streams_open = Gauge(
            "gateway_streams_open",
            "Long-lived streams (event streams, WebSockets) open, by kind of client",
            ["kind"],
            registry=registry,
        )
        self.streams_refused = Counter(
            "gateway_streams_refused",
            "Streams refused at a limit: per client (429), anonymous share or total (503)",
            ["reason"],
            registry=registry,
        )
        self.streams_expired = Counter(
            "gateway_streams_expired",
            "Streams the gateway ended at their maximum lifetime",
            registry=registry,
        )
        self.auth_rejections = Counter(
            "gateway_auth_rejections",
            "Requests refused at the edge with 401, by reason",
            ["reason"],
            registry=registry,
        )
        # ``labels()`` takes a lock and builds a key on each call: the per-request counters
        # keep their children here (label sets are bounded: routes, instances, statuses).
        self._children: dict[tuple[object, ...], Any] = {}

    def count_attempt(self, route: str, upstream: str, instance: str, outcome: str) -> None:
        """``upstream_requests`` + 1 for the attempt's outcome (a status code or failure kind)."""
        key = ("attempt", route, upstream, instance, outcome)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.upstream_requests.labels(
                route, upstream, instance, outcome
            )
        child.inc()

    def observe_upstream(self, route: str, upstream: str, seconds: float) -> None:
        """An attempt's time to the upstream's response headers."""
        key = ("latency", route, upstream)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.upstream_latency.labels(route, upstream)
        child.observe(seconds)

    def count_ratelimit(self, policy: str, result: str) -> None:
        """``ratelimit`` + 1 for a decision (``allowed`` or ``limited``) of ``policy``."""
        key = ("ratelimit", policy, result)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.ratelimit.labels(policy, result)
        child.inc()

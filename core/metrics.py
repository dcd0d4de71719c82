"""Prometheus metrics per application: its own registry, so several apps share a process."""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

__all__ = [
    "LATENCY_BUCKETS",
    "METRICS",
    "STREAM_BUCKETS",
    "Metrics",
    "RequestWindow",
    "WindowStats",
    "metrics_handler",
]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_MAX_CACHED_CHILDREN = 4096
# Event streams and WebSockets stay open for seconds to hours.
STREAM_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)


@dataclass(frozen=True, slots=True)
class WindowStats:
    """What ``RequestWindow.take`` returns: the requests of one interval."""

    seconds: float
    count: int
    client_errors: int
    server_errors: int
    p50: float | None
    p95: float | None
    p99: float | None


class RequestWindow:
    """Requests since the last ``take``: counts by status class and a sample of latencies.

    Percentiles come from the recorded durations themselves (at most ``max_samples`` per
    interval, a uniform reservoir beyond that), not from histogram buckets.
    """

    def __init__(self, *, max_samples: int = 20_000) -> None:
        self.max_samples = max_samples
        self._durations: list[float] = []
        self._count = 0
        self._client_errors = 0
        self._server_errors = 0
        self._since = time.monotonic()

    def observe(self, status: int, seconds: float) -> None:
        """Record one request."""
        self._count += 1
        if status >= 500:
            self._server_errors += 1
        elif status >= 400:
            self._client_errors += 1
        if len(self._durations) < self.max_samples:
            self._durations.append(seconds)
        else:
            slot = random.randrange(self._count)  # noqa: S311 - sampling, not security
            if slot < self.max_samples:
                self._durations[slot] = seconds

    def take(self) -> WindowStats:
        """The interval since the previous ``take`` (or creation); starts a new one."""
        now = time.monotonic()
        durations = sorted(self._durations)
        stats = WindowStats(
            seconds=max(now - self._since, 1e-9),
            count=self._count,
            client_errors=self._client_errors,
            server_errors=self._server_errors,
            p50=_percentile(durations, 0.50),
            p95=_percentile(durations, 0.95),
            p99=_percentile(durations, 0.99),
        )
        self._durations = []
        self._count = self._client_errors = self._server_errors = 0
        self._since = now
        return stats


def _percentile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank percentile of sorted ``ordered`` (None when empty)."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


class Metrics:
    """The standard metrics of a core service; services add their own to ``registry``."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "http_requests",
            "HTTP requests served",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "http_requests_in_flight", "HTTP requests being served", registry=self.registry
        )
        self.streams = Histogram(
            "http_stream_duration_seconds",
            "How long long-lived responses (event streams, WebSockets) stayed open",
            ["method", "route"],
            buckets=STREAM_BUCKETS,
            registry=self.registry,
        )
        self.window = RequestWindow()
        # The labelled children per (method, route, status): ``labels()`` costs more than the
        # increment itself. Bounded, since a client chooses the method.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request and its latency."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            code = str(status)
            children = (
                self.requests.labels(method, route, code),
                self.latency.labels(method, route, code),
            )
            if len(self._children) < _MAX_CACHED_CHILDREN:
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        self.window.observe(status, seconds)

    def observe_stream(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one long-lived response and how long it stayed open: a stream lasting minutes is
        not a slow request, so it stays out of the request latency and the dashboard's window."""
        self.requests.labels(method, route, str(status)).inc()
        self.streams.labels(method, route).observe(seconds)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


async def metrics_handler(metrics: Metrics) -> web.Response:
    """A ``/metrics`` response; rendered in a thread, since process metrics read ``/proc``."""
    response = web.Response(body=await asyncio.to_thread(metrics.exposition))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


METRICS = web.AppKey("metrics", Metrics)

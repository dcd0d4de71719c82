"""One service instance as the dashboard sees it: its latest snapshot, health and chart points.

Each ``metrics.snapshot`` becomes one chart point (``POINT_FIELDS``), numbered by a per-instance
sequence (what ``DashboardState.history(since=...)`` continues from) and kept for the
retention of ``StateLimits``.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from web.limits import StateLimits
from web.values import iso, number

__all__ = ["POINT_FIELDS", "Health", "InstanceState", "snapshot_point"]

Health = Literal["up", "degraded", "down"]

# One chart point per snapshot: the time (epoch seconds) and these figures, in this order.
POINT_FIELDS = (
    "t",
    "rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "errors_per_s",
    "in_flight",
    "cpu_percent",
    "rss_mb",
    "bus_per_s",
)


@dataclass
class InstanceState:
    """One service instance as its snapshots describe it."""

    service: str
    instance: str
    first_seen: float
    last_seen: float
    last_seen_at: datetime
    latest: dict[str, Any] = field(default_factory=dict)
    points: deque[tuple[int, list[float | None]]] = field(default_factory=deque)
    seq: int = 0

    @property
    def key(self) -> str:
        """``service/instance``: the instance's id in views and streams."""
        return f"{self.service}/{self.instance}"

    def record(self, data: dict[str, Any], now: float, retention: float) -> None:
        """Take one (validated) snapshot: it becomes the latest and adds a chart point; points
        older than ``retention`` seconds are dropped."""
        previous_bus = (self.latest.get("bus") or {}) if self.latest else {}
        self.last_seen = now
        self.last_seen_at = datetime.now(UTC)
        self.latest = data
        self.seq += 1
        self.points.append((self.seq, snapshot_point(data, previous_bus)))
        while self.points and self.points[0][1][0] is not None:
            oldest = self.points[0][1][0]
            if time.time() - oldest <= retention:
                break
            self.points.popleft()

    def health(self, now: float, limits: StateLimits) -> Health:
        """Down when silent past ``down_after``; degraded when late, failing or cut off."""
        return self.diagnose(now, limits)[0]

    def diagnose(self, now: float, limits: StateLimits) -> tuple[Health, list[str]]:
        """The health and the reasons for it (empty when up)."""
        silence = now - self.last_seen
        if silence > limits.down_after:
            return "down", [f"no snapshot for {silence:.0f} s"]
        errors = self.latest.get("errors") or {}
        traffic = self.latest.get("requests") or {}
        bus = self.latest.get("bus") or {}
        count = traffic.get("count") or 0
        server_ratio = (errors.get("server") or 0) / count if count else 0.0
        reasons = []
        if silence > limits.stale_after:
            reasons.append(f"last snapshot {silence:.1f} s ago")
        if server_ratio > limits.error_ratio:
            reasons.append(f"{server_ratio:.0%} of responses are 5xx")
        if bus.get("connected") is False:
            reasons.append("bus disconnected")
        return ("degraded" if reasons else "up"), reasons

    def view(self, now: float, limits: StateLimits, *, name: str, full: bool) -> dict[str, Any]:
        """The instance as the view shows it (JSON-ready), going by ``name``; without its host
        and pid unless ``full``."""
        data = self.latest
        traffic = data.get("requests") or {}
        errors = data.get("errors") or {}
        process = data.get("process") or {}
        health, reasons = self.diagnose(now, limits)
        return {
            "key": f"{self.service}/{name}",
            "service": self.service,
            "instance": name,
            "host": data.get("host") if full else None,
            "pid": process.get("pid") if full else None,
            "health": health,
            "health_reasons": reasons,
            "last_seen": iso(self.last_seen_at),
            "silent_for": round(max(0.0, now - self.last_seen), 1),
            "started_at": data.get("started_at"),
            "rps": number(traffic.get("rate")),
            "p50_ms": number(traffic.get("p50_ms")),
            "p95_ms": number(traffic.get("p95_ms")),
            "p99_ms": number(traffic.get("p99_ms")),
            "in_flight": number(traffic.get("in_flight")),
            "error_ratio": number(errors.get("ratio")),
            "errors_5xx_per_s": number(errors.get("server_rate")),
            "errors_4xx_per_s": number(errors.get("client_rate")),
            "cpu_percent": number(process.get("cpu_percent")),
            "rss_bytes": number(process.get("rss_bytes")),
            "cache": data.get("cache") or {},
            "bus": data.get("bus"),
            "business": data.get("business") or {},
        }


def snapshot_point(data: dict[str, Any], previous_bus: dict[str, Any]) -> list[float | None]:
    """The chart point (``POINT_FIELDS``) of one snapshot; the bus rate is the messages moved
    since the ``previous_bus`` figures (None for an instance's first snapshot)."""
    traffic = data.get("requests") or {}
    errors = data.get("errors") or {}
    process = data.get("process") or {}
    bus = data.get("bus") or {}
    interval = number(data.get("interval")) or 1.0
    moved = None
    if bus and previous_bus:
        delta = sum(
            (number(bus.get(k)) or 0) - (number(previous_bus.get(k)) or 0)
            for k in ("published", "consumed")
        )
        moved = round(max(delta, 0.0) / interval, 3)
    rss = number(process.get("rss_bytes"))
    return [
        round(time.time(), 3),
        number(traffic.get("rate")),
        number(traffic.get("p50_ms")),
        number(traffic.get("p95_ms")),
        number(traffic.get("p99_ms")),
        round(
            (number(errors.get("server_rate")) or 0) + (number(errors.get("client_rate")) or 0),
            3,
        ),
        number(traffic.get("in_flight")),
        number(process.get("cpu_percent")),
        None if rss is None else round(rss / 2**20, 2),
        moved,
    ]

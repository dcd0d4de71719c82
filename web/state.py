"""What the dashboard knows: a rolling window of every instance's snapshots, orders and events.

``DashboardState.apply(envelope)`` takes anything received from the bus (snapshots, order,
inventory, payment, user and product events); ``view()`` is the JSON-ready picture the page,
the API and the live stream show. Nothing here does I/O: time is passed in (``now``, seconds of
``time.monotonic``) so that tests drive it.

Every message is validated first (``web.messages``): one that does not fit is dropped and
counted (``rejected``), so nothing malformed is ever stored. Beyond the fields the dashboard
reads, event payloads are taken leniently: it shows what it understands of an event version it
does not know rather than dropping it.

Two views: the full one (for callers with ``metrics:read``) and the public one
(``full=False``), where host names, pids, order ids, correlation ids and event ids are left out
and each instance goes by a pseudonym (a keyed hash of its name, the key random per process).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from core.bus import Envelope
from web.messages import validate_envelope

__all__ = [
    "POINT_FIELDS",
    "DashboardState",
    "Health",
    "InstanceState",
    "SagaState",
    "StateLimits",
]

log = logging.getLogger("web.state")

Health = Literal["up", "degraded", "down"]
RejectHook = Callable[[str], None]

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

# Saga steps by event type: (label, kind); kind is ok, fail or compensate.
_STEPS: dict[str, tuple[str, str]] = {
    "order.placed": ("placed", "ok"),
    "inventory.reserved": ("reserved", "ok"),
    "inventory.reservation_failed": ("reservation failed", "fail"),
    "payment.authorized": ("authorized", "ok"),
    "payment.declined": ("payment declined", "fail"),
    "order.confirmed": ("confirmed", "ok"),
    "order.rejected": ("rejected", "fail"),
    "inventory.released": ("released", "compensate"),
    "payment.refunded": ("refunded", "compensate"),
    "order.cancelled": ("cancelled", "compensate"),
    "order.shipped": ("shipped", "ok"),
}
_STATUS: dict[str, str] = {
    "order.placed": "pending",
    "order.confirmed": "confirmed",
    "order.rejected": "rejected",
    "order.cancelled": "cancelled",
    "order.shipped": "shipped",
}
_FINAL = frozenset({"rejected", "cancelled", "shipped"})
_MAX_ORDERS_COUNTED = 100_000

# The dashboard is public (behind the gateway too): no full names, and e-mail addresses masked.
_SUMMARY_FIELDS = (
    "email",
    "name",
    "sku",
    "order_id",
    "product_id",
    "status",
    "reason",
    "total_cents",
    "amount_cents",
    "currency",
    "available",
)


@dataclass(frozen=True, slots=True)
class StateLimits:
    """How long and how much the state keeps (from the web settings)."""

    retention: float = 600.0
    stale_after: float = 3.0
    down_after: float = 10.0
    error_ratio: float = 0.05
    orders: int = 50
    events: int = 100


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


@dataclass
class SagaState:
    """One order's saga as its events arrive."""

    order_id: str
    first_seen: float
    correlation_id: str | None = None
    status: str = "pending"
    reason: str | None = None
    total_cents: int | None = None
    currency: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class DashboardState:
    """The rolling window behind the dashboard.

    ``on_reject`` is called with ``"snapshot"`` or ``"event"`` for every message dropped as
    malformed (the app counts them in its metrics).
    """

    def __init__(
        self, limits: StateLimits | None = None, *, on_reject: RejectHook | None = None
    ) -> None:
        self.limits = limits or StateLimits()
        self.on_reject = on_reject
        self.rejected = 0
        self._pseudonym_key = secrets.token_bytes(32)
        self.instances: dict[str, InstanceState] = {}
        self.sagas: OrderedDict[str, SagaState] = OrderedDict()
        self.events: deque[dict[str, Any]] = deque(maxlen=self.limits.events)
        self.registrations = 0
        self.received = 0
        self._by_correlation: dict[str, str] = {}
        # Every order seen: (status, total_cents, currency), bounded, for the business figures.
        self._orders: OrderedDict[str, tuple[str, int | None, str]] = OrderedDict()
        self._seen_ids: OrderedDict[str, None] = OrderedDict()

    # -- input -------------------------------------------------------------------------------

    def apply(self, envelope: Envelope, *, now: float | None = None) -> bool:
        """Take one received envelope; False for a duplicate (at-least-once delivery) or a
        malformed message (dropped and counted in ``rejected``)."""
        now = time.monotonic() if now is None else now
        try:
            data = validate_envelope(envelope)
        except ValidationError as exc:
            self._reject(envelope, exc)
            return False
        event_id = str(envelope.id)
        if event_id in self._seen_ids:
            return False
        self._seen_ids[event_id] = None
        if len(self._seen_ids) > 10_000:
            self._seen_ids.popitem(last=False)
        self.received += 1
        if envelope.type == "metrics.snapshot":
            self._snapshot(data, now)
            return True
        self._event(envelope, now)
        return True

    def _reject(self, envelope: Envelope, exc: ValidationError) -> None:
        kind = "snapshot" if envelope.type == "metrics.snapshot" else "event"
        self.rejected += 1
        if self.on_reject is not None:
            self.on_reject(kind)
        # Where it failed, never the values (they are whatever the sender put there).
        where = ".".join(str(part) for part in exc.errors()[0]["loc"]) if exc.errors() else ""
        level = logging.WARNING if self.rejected % 100 == 1 else logging.DEBUG
        log.log(
            level,
            "dashboard dropped a malformed %s from %.100s at %.200s (%d dropped so far)",
            envelope.type,
            envelope.source,
            where,
            self.rejected,
        )

    def _snapshot(self, data: dict[str, Any], now: float) -> None:
        service = str(data.get("service") or "unknown")
        name = str(data.get("instance") or "unknown")
        key = f"{service}/{name}"
        instance = self.instances.get(key)
        if instance is None:
            instance = InstanceState(service, name, now, now, datetime.now(UTC))
            self.instances[key] = instance
        previous_bus = (instance.latest.get("bus") or {}) if instance.latest else {}
        instance.last_seen = now
        instance.last_seen_at = datetime.now(UTC)
        instance.latest = data
        instance.seq += 1
        instance.points.append((instance.seq, self._point(data, previous_bus)))
        while instance.points and instance.points[0][1][0] is not None:
            oldest = instance.points[0][1][0]
            if time.time() - oldest <= self.limits.retention:
                break
            instance.points.popleft()

    @staticmethod
    def _point(data: dict[str, Any], previous_bus: dict[str, Any]) -> list[float | None]:
        traffic = data.get("requests") or {}
        errors = data.get("errors") or {}
        process = data.get("process") or {}
        bus = data.get("bus") or {}
        interval = _number(data.get("interval")) or 1.0
        moved = None
        if bus and previous_bus:
            delta = sum(
                (_number(bus.get(k)) or 0) - (_number(previous_bus.get(k)) or 0)
                for k in ("published", "consumed")
            )
            moved = round(max(delta, 0.0) / interval, 3)
        rss = _number(process.get("rss_bytes"))
        return [
            round(time.time(), 3),
            _number(traffic.get("rate")),
            _number(traffic.get("p50_ms")),
            _number(traffic.get("p95_ms")),
            _number(traffic.get("p99_ms")),
            round(
                (_number(errors.get("server_rate")) or 0)
                + (_number(errors.get("client_rate")) or 0),
                3,
            ),
            _number(traffic.get("in_flight")),
            _number(process.get("cpu_percent")),
            None if rss is None else round(rss / 2**20, 2),
            moved,
        ]

    def _event(self, envelope: Envelope, now: float) -> None:
        data = envelope.data
        if envelope.type == "user.registered":
            self.registrations += 1
        self.events.appendleft(
            {
                "id": str(envelope.id),
                "type": envelope.type,
                "source": envelope.source,
                "at": _iso(envelope.occurred_at),
                "correlation_id": envelope.correlation_id,
                "summary": _summary(data),
                "public_summary": _summary(data, public=True),
            }
        )
        if envelope.type.split(".", 1)[0] not in ("order", "inventory", "payment"):
            return
        order_id = data.get("order_id")
        if order_id is None and envelope.correlation_id:
            order_id = self._by_correlation.get(envelope.correlation_id)
        if order_id is None:
            return  # stock changes of no order (an admin's PUT)
        order_id = str(order_id)
        saga = self.sagas.get(order_id)
        if saga is None:
            if envelope.type == "inventory.changed":
                return  # a stock echo of an order the dashboard has not seen
            saga = self.sagas[order_id] = SagaState(order_id, now)
            while len(self.sagas) > self.limits.orders:
                _, dropped = self.sagas.popitem(last=False)
                if dropped.correlation_id:
                    self._by_correlation.pop(dropped.correlation_id, None)
        if saga.correlation_id is None and envelope.correlation_id:
            saga.correlation_id = envelope.correlation_id
            self._by_correlation[envelope.correlation_id] = order_id
        total = _number(data.get("total_cents"))
        if envelope.type.startswith("order.") and total is not None:
            saga.total_cents = int(total)
            saga.currency = str(data.get("currency") or saga.currency or "USD")
        status = _STATUS.get(envelope.type)
        # Events may arrive out of order: a placement never undoes a later status, and nothing
        # moves an order out of a final one.
        if (
            status is not None
            and saga.status not in _FINAL
            and not (status == "pending" and saga.status != "pending")
        ):
            saga.status = status
        self._orders[order_id] = (saga.status, saga.total_cents, saga.currency or "USD")
        if len(self._orders) > _MAX_ORDERS_COUNTED:
            self._orders.popitem(last=False)
        reason = data.get("reason")
        if isinstance(reason, str) and envelope.type != "inventory.changed" and not saga.reason:
            saga.reason = reason
        if envelope.type == "inventory.changed":
            return  # the stock side of a step already shown
        label, kind = _STEPS.get(envelope.type, (envelope.type.split(".", 1)[1], "ok"))
        saga.steps.append(
            {
                "type": envelope.type,
                "label": label,
                "kind": kind,
                "at": _iso(envelope.occurred_at),
                "source": envelope.source,
                "reason": reason if isinstance(reason, str) else None,
            }
        )
        saga.steps.sort(key=lambda step: str(step["at"]))

    def prune(self, now: float | None = None) -> None:
        """Forget instances silent for longer than the retention."""
        now = time.monotonic() if now is None else now
        for key, instance in list(self.instances.items()):
            if now - instance.last_seen > self.limits.retention:
                del self.instances[key]

    # -- output ------------------------------------------------------------------------------

    def view(self, *, now: float | None = None, full: bool = False) -> dict[str, Any]:
        """The whole picture without chart history (JSON-ready); ``full=False``: the public
        one, without host names, pids and ids (see the module docstring)."""
        now = time.monotonic() if now is None else now
        services: dict[str, list[dict[str, Any]]] = {}
        counts = {"up": 0, "degraded": 0, "down": 0}
        rps = errors = edge_rps = edge_errors = 0.0
        edge = False
        service_figures: dict[str, dict[str, Any]] = {}
        for instance in sorted(self.instances.values(), key=lambda i: (i.service, i.instance)):
            item = self._instance_view(instance, now, full)
            services.setdefault(instance.service, []).append(item)
            counts[item["health"]] += 1
            if item["health"] != "down":
                served = item["rps"] or 0
                failed = (item["errors_5xx_per_s"] or 0) + (item["errors_4xx_per_s"] or 0)
                rps += served
                errors += failed
                if instance.service == "gateway":
                    edge, edge_rps, edge_errors = True, edge_rps + served, edge_errors + failed
                if item["business"]:
                    service_figures.setdefault(instance.service, {}).update(item["business"])
        if edge:
            rps, errors = edge_rps, edge_errors
        return {
            "generated_at": _iso(datetime.now(UTC)),
            "limits": {
                "retention": self.limits.retention,
                "stale_after": self.limits.stale_after,
                "down_after": self.limits.down_after,
            },
            # With a gateway, the system's throughput is what enters through it: a request it
            # forwards is counted again by the service behind it.
            "totals": {
                "rps": round(rps, 2),
                "errors_per_s": round(errors, 2),
                "error_ratio": round(errors / rps, 4) if rps else 0.0,
                "counted_at": "gateway" if edge else "services",
                "instances": counts,
                "events_received": self.received,
                "feed_rejected": self.rejected,
            },
            "services": [
                {"service": name, "instances": items} for name, items in sorted(services.items())
            ],
            "business": self._business(service_figures),
            "sagas": [self._saga_view(s, full) for s in reversed(self.sagas.values())],
            "events": [self._event_view(e, full) for e in self.events],
        }

    def history(
        self, since: dict[str, int] | None = None, *, full: bool = False
    ) -> dict[str, dict[str, Any]]:
        """Chart points per instance key: all of them, or those after the ``since`` sequence
        (a ``cursor()``); keyed by pseudonym with ``full=False``."""
        since = since or {}
        result = {}
        for key, instance in self.instances.items():
            after = since.get(key, 0)
            points = [point for seq, point in instance.points if seq > after]
            if points or key not in since:
                name = instance.instance if full else self.pseudonym(instance.instance)
                result[f"{instance.service}/{name}"] = {
                    "service": instance.service,
                    "instance": name,
                    "seq": instance.seq,
                    "points": points,
                }
        return result

    def pseudonym(self, value: str, prefix: str = "i-") -> str:
        """A stable stand-in for ``value`` (an instance name, an order id) in public views:
        a keyed hash, the key random per process, so that it cannot be reversed."""
        digest = hmac.new(self._pseudonym_key, value.encode(), hashlib.sha256).hexdigest()
        return prefix + digest[:8]

    def cursor(self) -> dict[str, int]:
        """The latest sequence per instance (what ``history(since=...)`` continues from)."""
        return {key: instance.seq for key, instance in self.instances.items()}

    def _instance_view(self, instance: InstanceState, now: float, full: bool) -> dict[str, Any]:
        data = instance.latest
        traffic = data.get("requests") or {}
        errors = data.get("errors") or {}
        process = data.get("process") or {}
        health, reasons = instance.diagnose(now, self.limits)
        name = instance.instance if full else self.pseudonym(instance.instance)
        return {
            "key": f"{instance.service}/{name}",
            "service": instance.service,
            "instance": name,
            "host": data.get("host") if full else None,
            "pid": process.get("pid") if full else None,
            "health": health,
            "health_reasons": reasons,
            "last_seen": _iso(instance.last_seen_at),
            "silent_for": round(max(0.0, now - instance.last_seen), 1),
            "started_at": data.get("started_at"),
            "rps": _number(traffic.get("rate")),
            "p50_ms": _number(traffic.get("p50_ms")),
            "p95_ms": _number(traffic.get("p95_ms")),
            "p99_ms": _number(traffic.get("p99_ms")),
            "in_flight": _number(traffic.get("in_flight")),
            "error_ratio": _number(errors.get("ratio")),
            "errors_5xx_per_s": _number(errors.get("server_rate")),
            "errors_4xx_per_s": _number(errors.get("client_rate")),
            "cpu_percent": _number(process.get("cpu_percent")),
            "rss_bytes": _number(process.get("rss_bytes")),
            "cache": data.get("cache") or {},
            "bus": data.get("bus"),
            "business": data.get("business") or {},
        }

    def _business(self, service_figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Registrations, orders by status and revenue: from the services' own figures when
        they contribute them (``registrations``, ``orders_by_status``, ``revenue_cents``), else
        counted from the events seen since the dashboard started."""
        by_status: dict[str, int] = {}
        revenue: dict[str, int] = {}
        for status, total, currency in self._orders.values():
            by_status[status] = by_status.get(status, 0) + 1
            if status in ("confirmed", "shipped") and total is not None:
                revenue[currency] = revenue.get(currency, 0) + total
        totals: dict[str, int] = {}
        figured_status: dict[str, int] = {}
        figured_revenue: dict[str, int] = {}
        for figures in service_figures.values():
            registrations = _number(figures.get("registrations"))
            if registrations is not None:
                totals["registrations"] = totals.get("registrations", 0) + int(registrations)
            statuses = figures.get("orders_by_status")
            if isinstance(statuses, dict):
                for status, count in statuses.items():
                    if (value := _number(count)) is not None:
                        figured_status[str(status)] = figured_status.get(str(status), 0) + int(
                            value
                        )
            cents = figures.get("revenue_cents")
            if isinstance(cents, dict):
                for currency, value in cents.items():
                    if (amount := _number(value)) is not None:
                        figured_revenue[str(currency)] = figured_revenue.get(
                            str(currency), 0
                        ) + int(amount)
            elif (amount := _number(cents)) is not None:
                figured_revenue["USD"] = figured_revenue.get("USD", 0) + int(amount)
        return {
            "registrations": self.registrations,
            "registrations_total": totals.get("registrations"),
            "orders_by_status": dict(sorted((figured_status or by_status).items())),
            "revenue_cents": dict(sorted((figured_revenue or revenue).items())),
            "orders_source": "figures" if figured_status else "events",
            "services": dict(sorted(service_figures.items())),
        }

    def _saga_view(self, saga: SagaState, full: bool) -> dict[str, Any]:
        return {
            "order_id": saga.order_id if full else self.pseudonym(saga.order_id, "o-"),
            "correlation_id": saga.correlation_id if full else None,
            "status": saga.status,
            "reason": saga.reason,
            "total_cents": saga.total_cents,
            "currency": saga.currency,
            "steps": list(saga.steps),
        }

    @staticmethod
    def _event_view(event: dict[str, Any], full: bool) -> dict[str, Any]:
        if full:
            return {k: v for k, v in event.items() if k != "public_summary"}
        return {
            "id": None,
            "type": event["type"],
            "source": event["source"],
            "at": event["at"],
            "correlation_id": None,
            "summary": event["public_summary"],
        }


def _mask_email(address: str) -> str:
    """``alice@example.com`` -> ``a***@example.com``."""
    local, at, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}" if at and local else "***"


def _summary(data: dict[str, Any], *, public: bool = False) -> str:
    """A short text of an event's payload (rendered escaped, like every value); ``public``:
    without the order id."""
    parts = []
    for name in _SUMMARY_FIELDS:
        if public and name == "order_id":
            continue
        value = data.get(name)
        if value is None or isinstance(value, dict | list):
            continue
        text = str(value)
        if name.endswith("_id") and len(text) > 8:
            text = text[:8]
        if name == "email":
            text = _mask_email(text)
        parts.append(f"{name}={text}")
    return " ".join(parts)[:200]

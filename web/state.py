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

The parts live beside this module: each instance and its chart points in ``web.instances``,
the order sagas in ``web.sagas``, the recent events in ``web.event_log``, the business figures
in ``web.business``, the pseudonyms in ``web.pseudonyms`` and the limits in ``web.limits``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from core.bus import Envelope
from web.alerts import AlertBook
from web.business import business_figures
from web.event_log import event_record, event_view
from web.instances import POINT_FIELDS, Health, InstanceState
from web.limits import StateLimits
from web.messages import validate_envelope
from web.pseudonyms import Pseudonyms
from web.sagas import Sagas, SagaState
from web.values import iso

__all__ = [
    "POINT_FIELDS",
    "DashboardState",
    "Health",
    "InstanceState",
    "SagaState",
    "StateLimits",
]

log = logging.getLogger("web.state")

RejectHook = Callable[[str], None]

# How many event ids are remembered to recognise a redelivery.
_SEEN_IDS = 10_000


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
        self._pseudonyms = Pseudonyms()
        self.instances: dict[str, InstanceState] = {}
        self._sagas = Sagas(self.limits.orders)
        self.events: deque[dict[str, Any]] = deque(maxlen=self.limits.events)
        self.registrations = 0
        self.received = 0
        self._seen_ids: OrderedDict[str, None] = OrderedDict()
        self.alerts = AlertBook()  # from Alertmanager's webhook (web.alerts)

    @property
    def sagas(self) -> OrderedDict[str, SagaState]:
        """The last ``limits.orders`` order sagas by order id, oldest first."""
        return self._sagas.sagas

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
        if len(self._seen_ids) > _SEEN_IDS:
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
        instance.record(data, now, self.limits.retention)

    def _event(self, envelope: Envelope, now: float) -> None:
        if envelope.type == "user.registered":
            self.registrations += 1
        self.events.appendleft(event_record(envelope))
        self._sagas.apply(envelope, now)

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
            name = instance.instance if full else self.pseudonym(instance.instance)
            item = instance.view(now, self.limits, name=name, full=full)
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
            "generated_at": iso(datetime.now(UTC)),
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
            "business": business_figures(self.registrations, self._sagas.orders, service_figures),
            "sagas": self._sagas.views(full=full, pseudonym=self.pseudonym),
            "events": [event_view(e, full) for e in self.events],
            "alerts": self.alerts.view(full=full),
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
        return self._pseudonyms(value, prefix)

    def cursor(self) -> dict[str, int]:
        """The latest sequence per instance (what ``history(since=...)`` continues from)."""
        return {key: instance.seq for key, instance in self.instances.items()}

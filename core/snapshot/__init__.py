"""``metrics.snapshot``: what each service instance publishes about itself, every second.

A ``Snapshotter`` (``app[SNAPSHOT]``, made by ``create_app``) gathers, for the interval since
its previous snapshot: requests (count, rate, p50/p95/p99 latency, 4xx/5xx), requests in flight,
the process's CPU and resident memory, cache hits and misses per tier, bus traffic and outbox lag,
and the business figures the service contributes. ``bus_ctx`` runs its publishing loop
while the bus is connected (``METRICS_SNAPSHOT_INTERVAL`` seconds apart, default 1, 0 turns it off).

Snapshots are telemetry, not data: they go straight to the transport (no outbox, no retry, not
counted in the bus's ``published``), a snapshot that cannot be sent within the interval is
dropped, and nothing a request does ever waits for one.

Business figures: a service registers a provider, any time before the app starts::

    async def figures(app: web.Application) -> dict[str, Any]:
        return {"registrations": await count_users(app[DB_POOL])}

    add_figures(app, figures, every=5.0)

``every`` caches a costly provider's answer for that many seconds. Values must be JSON: numbers,
strings, or flat dicts of numbers (``{"orders_by_status": {"confirmed": 3}}``); the dashboard
shows them by name and draws known ones (``registrations``, ``orders_by_status``,
``revenue_cents``). Several providers merge their dicts; one that fails or takes more than half
the interval is left out of that snapshot.

The contract (the event and its figure models) is ``events.py``; the publisher ``publisher.py``.
"""

from core.snapshot.events import (
    BusFigures,
    CacheTierFigures,
    ErrorFigures,
    MetricsSnapshot,
    ProcessFigures,
    RequestFigures,
)
from core.snapshot.publisher import (
    SNAPSHOT,
    FiguresProvider,
    Snapshotter,
    add_figures,
    snapshot_interval,
)

__all__ = [
    "SNAPSHOT",
    "BusFigures",
    "CacheTierFigures",
    "ErrorFigures",
    "FiguresProvider",
    "MetricsSnapshot",
    "ProcessFigures",
    "RequestFigures",
    "Snapshotter",
    "add_figures",
    "snapshot_interval",
]

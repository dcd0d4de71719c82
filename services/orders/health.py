"""The saga backlog: unfinished sagas and the age of the oldest, for ``/readyz`` details and
the ``orders_saga_pending`` / ``orders_saga_oldest_pending_seconds`` gauges.

Measured by one query in the background task of ``core.health_details`` (every
``HEALTH_DETAILS_INTERVAL`` seconds), never per scrape or per ``/readyz``. It counts at most
``COUNT_CAP`` unfinished sagas (past that the backlog is an incident whatever its exact size),
and finds the oldest over all of them, whatever the count: the first entry of the partial index
``order_sagas_pending_started`` (migration 0006), a descent of the index whatever the backlog.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from core.health import Detail, Probe
from services.orders.metrics import OrderMetrics

__all__ = ["COUNT_CAP", "SagaBacklog", "measure_backlog", "saga_backlog_probe"]

COUNT_CAP = 100_000

_BACKLOG = """
    SELECT (SELECT count(*)
              FROM (SELECT 1 FROM order_sagas WHERE step <> 'done' LIMIT $1) AS capped
           ) AS pending,
           coalesce(extract(epoch FROM now() - (
               SELECT min(started_at) FROM order_sagas WHERE step <> 'done'
           )), 0)::float8 AS oldest
"""


@dataclass(frozen=True, slots=True)
class SagaBacklog:
    """How many sagas are unfinished, and how old the oldest is (seconds, 0 when none)."""

    pending: int
    oldest_seconds: float


async def measure_backlog(
    db: asyncpg.Pool | asyncpg.Connection, *, cap: int = COUNT_CAP
) -> SagaBacklog:
    """The saga backlog now: at most ``cap`` sagas counted, the oldest of all of them."""
    row = await db.fetchrow(_BACKLOG, cap)
    assert row is not None  # a SELECT without FROM always returns a row
    return SagaBacklog(int(row["pending"]), max(0.0, round(float(row["oldest"]), 3)))


def saga_backlog_probe(
    pool: asyncpg.Pool, metrics: OrderMetrics, *, pending_warn: int, age_warn: float
) -> Probe:
    """A ``/readyz`` probe giving ``saga_pending`` and ``saga_oldest_pending_seconds``, and
    setting the gauges of ``metrics`` as it measures."""

    async def probe() -> Mapping[str, Detail]:
        backlog = await measure_backlog(pool)
        metrics.saga_pending.set(backlog.pending)
        metrics.saga_oldest_pending.set(backlog.oldest_seconds)
        return {
            "saga_pending": Detail.against(backlog.pending, pending_warn, {"unit": "sagas"}),
            "saga_oldest_pending_seconds": Detail.against(
                backlog.oldest_seconds, age_warn, {"unit": "seconds"}
            ),
        }

    return probe

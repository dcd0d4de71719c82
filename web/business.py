"""The dashboard's business figures: registrations, orders by status and revenue.

From the services' own figures when they contribute them (``registrations``,
``orders_by_status``, ``revenue_cents`` in their snapshots' ``business``), else counted from
the events seen since the dashboard started.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from web.values import number

__all__ = ["business_figures"]


def business_figures(
    registrations: int,
    orders: Iterable[tuple[str, int | None, str]],
    service_figures: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The business part of the view: ``registrations`` counted from events, ``orders`` seen
    (status, total in cents, currency) and each service's own ``business`` figures."""
    by_status: dict[str, int] = {}
    revenue: dict[str, int] = {}
    for status, total, currency in orders:
        by_status[status] = by_status.get(status, 0) + 1
        if status in ("confirmed", "shipped") and total is not None:
            revenue[currency] = revenue.get(currency, 0) + total
    totals: dict[str, int] = {}
    figured_status: dict[str, int] = {}
    figured_revenue: dict[str, int] = {}
    for figures in service_figures.values():
        registered = number(figures.get("registrations"))
        if registered is not None:
            totals["registrations"] = totals.get("registrations", 0) + int(registered)
        statuses = figures.get("orders_by_status")
        if isinstance(statuses, dict):
            for status, count in statuses.items():
                if (value := number(count)) is not None:
                    figured_status[str(status)] = figured_status.get(str(status), 0) + int(value)
        cents = figures.get("revenue_cents")
        if isinstance(cents, dict):
            for currency, value in cents.items():
                if (amount := number(value)) is not None:
                    figured_revenue[str(currency)] = figured_revenue.get(str(currency), 0) + int(
                        amount
                    )
        elif (amount := number(cents)) is not None:
            figured_revenue["USD"] = figured_revenue.get("USD", 0) + int(amount)
    return {
        "registrations": registrations,
        "registrations_total": totals.get("registrations"),
        "orders_by_status": dict(sorted((figured_status or by_status).items())),
        "revenue_cents": dict(sorted((figured_revenue or revenue).items())),
        "orders_source": "figures" if figured_status else "events",
        "services": dict(sorted(service_figures.items())),
    }

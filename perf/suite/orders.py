"""The orders rows: orders placed through the gateway until their sagas are done.

A closed loop of clients, each placing an order and waiting for its saga's final event in the
orders database before the next, gives the sustained rate; an open loop at 80 % of it gives the
completion latency a customer sees below saturation (``perf.bench_orders.measure_against``).
The client is Python, in this process: wrk cannot follow a saga to its end.
"""

from __future__ import annotations

import asyncio

from perf.bench_orders import OrdersRow, customer_token, measure_against, product_ids
from perf.suite.system import System
from perf.suite.table import Row

__all__ = ["orders_rows"]

TARGET_RATE = 300.0
TARGET_P99_MS = 250.0


def _row(name: str, measured: OrdersRow, *, target: str, met: bool) -> Row:
    notes = [f"{measured.placed} placed, {measured.confirmed} confirmed"]
    if measured.errors:
        notes.append(f"{measured.errors} errors ({measured.first_error or 'not confirmed'})")
    return Row(
        group="orders",
        name=name,
        throughput=measured.orders_per_s,
        unit="sagas done/s",
        p50_ms=measured.p50_ms,
        p99_ms=measured.p99_ms,
        target=target,
        met=met,
        note="; ".join(notes),
    )


async def _measure(system: System, seconds: float) -> list[Row]:
    products = await product_ids(system.databases["products"])
    token = customer_token()
    gateway, orders_dsn = system.url("gateway"), system.databases["orders"]
    sustained = await measure_against(
        gateway, orders_dsn, products, rate=None, duration=seconds, token=token
    )
    rows = [
        _row(
            "order placed to saga done, closed loop of 32 (sustained)",
            sustained,
            target=f">= {TARGET_RATE:.0f}/s",
            met=sustained.orders_per_s >= TARGET_RATE,
        )
    ]
    rate = max(1.0, 0.8 * sustained.orders_per_s)
    steady = await measure_against(
        gateway, orders_dsn, products, rate=rate, duration=seconds, token=token, seed=1
    )
    rows.append(
        _row(
            f"order placed to saga done, open loop at 80 % of it ({rate:.0f}/s)",
            steady,
            target=f"p99 <= {TARGET_P99_MS:.0f} ms",
            met=steady.p99_ms <= TARGET_P99_MS,
        )
    )
    return rows


def orders_rows(system: System, *, seconds: float) -> list[Row]:
    """The sustained and the 80 % rows, against the running ``system`` through its gateway."""
    return asyncio.run(_measure(system, seconds))

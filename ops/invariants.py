"""What must hold in the databases of a running system, whatever it went through.

``check_invariants(orders_dsn, products_dsn)`` reads the orders and products databases (and,
given ``amqp_url``, the parking queues) and returns every ``Violation`` found; an empty list
means the system is consistent. The fault-injection suite (``ops.chaos``) calls it after each
fault and the disaster-recovery drill (``ops.drill``) after a restore.

The invariants (``Violation.invariant``):

``order-final-status``
    Every order leaves ``pending`` and its saga reaches ``done`` (no reservation, payment or
    refund left half done).
``stock-reserved``
    Each product's ``inventory.reserved`` is the sum of the lines of its ``reserved``
    reservations (products' own bookkeeping).
``stock-matches-orders``
    An order's reservation agrees with its status: ``confirmed`` holds its items' quantities
    (``reserved``), ``shipped`` has them ``committed``, ``rejected`` and ``cancelled`` hold
    nothing (``failed`` or ``released``); no stock is held for an order the orders service
    does not know. With ``stock-reserved`` this is "reserved stock equals the quantities of the
    orders that are confirmed and not shipped" (plus those of orders still pending payment).
``payment-single-authorization``
    No stream has two ``payment.authorized`` events, and the one it has names the ledger's
    payment of the order.
``payment-settled``
    No money is kept for an order that is neither confirmed nor shipped once its saga is done
    (its payment, if any, was declined or refunded).
``read-model``
    Every ``order.*`` stream reached the read model: ``order_views`` equals a replay of
    ``order_events`` (``aioshop orders check-read-model``).
``outbox-drained``
    Every row of both outboxes gets published.
``parking-empty``
    No message is parked on the given queues; the detail explains each one that is (routing
    key, attempts, the reason the consumer gave).

Orders keep moving while a check runs (the load does not stop), so the checks that depend on
asynchronous work (the saga, the bus) are polled: what is wrong at the start of the check must
be right again before ``deadline`` seconds have passed, and only what is still wrong then is a
violation. Newer orders are the next check's business. The other checks read one snapshot.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiormq
import asyncpg
from aiormq.exceptions import ChannelNotFoundEntity

from core.bus.amqp.common import parked_message, parking_queue_name
from services.orders.commands import check_read_model

__all__ = ["INVARIANTS", "Violation", "check_invariants", "order_counts"]

INVARIANTS = (
    "order-final-status",
    "stock-reserved",
    "stock-matches-orders",
    "payment-single-authorization",
    "payment-settled",
    "read-model",
    "outbox-drained",
    "parking-empty",
)
POLL_INTERVAL = 0.5
SHOWN = 5  # ids quoted in a violation's detail


@dataclass(frozen=True, slots=True)
class Violation:
    """An invariant that does not hold, and what breaks it."""

    invariant: str  # one of INVARIANTS, e.g. "order-final-status"
    detail: str


Problems = dict[str, str]  # a key (an order id, a product id...) -> what is wrong with it
Probe = Callable[[], Awaitable[Problems]]


async def check_invariants(
    orders_dsn: str,
    products_dsn: str,
    *,
    deadline: float = 30.0,
    amqp_url: str | None = None,
    parking_queues: Sequence[str] = (),
) -> list[Violation]:
    """Every invariant violated in the system whose databases are at ``orders_dsn`` and
    ``products_dsn`` (direct addresses, not through a fault proxy).

    What depends on asynchronous work has ``deadline`` seconds to come right (see the module).
    ``parking_queues`` are consumed queues (``ORDERS_BUS_QUEUE``...) whose parking queues are
    read at ``amqp_url``, as ``aioshop bus parked QUEUE`` does. Each check uses one connection
    per database.
    """
    orders = await asyncpg.connect(orders_dsn)
    try:
        products = await asyncpg.connect(products_dsn)
        try:
            return await _check(orders, products, orders_dsn, deadline, amqp_url, parking_queues)
        finally:
            await products.close()
    finally:
        await orders.close()


async def order_counts(orders_dsn: str) -> dict[str, int]:
    """How many orders the database at ``orders_dsn`` holds, by status (what the invariants
    were checked on: a run whose load placed no order proves little)."""
    conn = await asyncpg.connect(orders_dsn)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM order_views GROUP BY status")
    finally:
        await conn.close()
    return {row["status"]: int(row["n"]) for row in sorted(rows, key=lambda r: r["status"])}


async def _check(
    orders: asyncpg.Connection,
    products: asyncpg.Connection,
    orders_dsn: str,
    deadline: float,
    amqp_url: str | None,
    parking_queues: Sequence[str],
) -> list[Violation]:
    # One connection per database is shared by the polled probes, so they take turns.
    lock = asyncio.Lock()

    def serial(probe: Probe) -> Probe:
        async def run() -> Problems:
            async with lock:
                return await probe()

        return run

    until = time.monotonic() + deadline
    polled = {
        "order-final-status": serial(lambda: _unsettled_orders(orders)),
        "stock-matches-orders": serial(lambda: _stock_against_orders(orders, products)),
        "payment-settled": serial(lambda: _unsettled_payments(orders)),
        "outbox-drained": serial(lambda: _unpublished(orders, products)),
        # Polled too: a saga may still project its last event when the check starts (a real
        # divergence stays).
        "read-model": lambda: _read_model(orders_dsn),
    }
    results = await asyncio.gather(*(_settle(probe, until) for probe in polled.values()))
    violations = [
        Violation(name, _describe(problems))
        for name, problems in zip(polled, results, strict=True)
        if problems
    ]
    for name, problems in (
        ("stock-reserved", await _reserved_totals(products)),
        ("payment-single-authorization", await _double_authorizations(orders)),
    ):
        if problems:
            violations.append(Violation(name, _describe(problems)))
    if amqp_url is not None and parking_queues:
        parked = await _parked(amqp_url, parking_queues)
        if parked:
            violations.append(Violation("parking-empty", _describe(parked)))
    return violations


async def _settle(probe: Probe, until: float) -> Problems:
    """What ``probe`` finds wrong now and still finds wrong at ``until`` (rechecked until then,
    while anything is left)."""
    initial = await probe()
    left = initial
    while left and time.monotonic() < until:
        await asyncio.sleep(min(POLL_INTERVAL, max(0.0, until - time.monotonic())))
        now = await probe()
        left = {key: now[key] for key in initial if key in now}
    return left


def _describe(problems: Problems) -> str:
    shown = [f"{key}: {what}" for key, what in sorted(problems.items())[:SHOWN]]
    more = len(problems) - len(shown)
    return f"{len(problems)}: " + "; ".join(shown) + (f"; and {more} more" if more else "")


# the probes ------------------------------------------------------------------------------------


async def _unsettled_orders(orders: asyncpg.Connection) -> Problems:
    rows = await orders.fetch(
        """
        SELECT coalesce(v.id, s.order_id) AS id, v.status, s.step
          FROM order_views v
          FULL JOIN order_sagas s ON s.order_id = v.id
         WHERE v.status IS NULL OR v.status = 'pending' OR (s.step IS NOT NULL AND s.step <> 'done')
        """
    )
    return {
        str(row["id"]): f"status {row['status'] or 'missing'}, saga {row['step'] or 'missing'}"
        for row in rows
    }


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _lines(items: Any) -> dict[str, int]:
    merged: Counter[str] = Counter()
    for item in _json(items):
        merged[str(item["product_id"])] += int(item["quantity"])
    return dict(merged)


async def _stock_against_orders(
    orders: asyncpg.Connection, products: asyncpg.Connection
) -> Problems:
    views = {
        str(row["id"]): (row["status"], _lines(row["items"]))
        for row in await orders.fetch("SELECT id, status, items FROM order_views")
    }
    reservations: dict[str, tuple[str, dict[str, int]]] = {}
    for row in await products.fetch(
        """
        SELECT r.order_id, r.status,
               coalesce(jsonb_object_agg(l.product_id, l.quantity)
                        FILTER (WHERE l.product_id IS NOT NULL), '{}'::jsonb) AS lines
          FROM reservations r LEFT JOIN reservation_lines l USING (order_id)
         GROUP BY r.order_id, r.status
        """
    ):
        reservations[str(row["order_id"])] = (
            row["status"],
            {product: int(quantity) for product, quantity in _json(row["lines"]).items()},
        )
    problems: Problems = {}
    for order_id, (status, items) in views.items():
        held, lines = reservations.get(order_id, ("none", {}))
        wrong = _stock_mismatch(status, items, held, lines)
        if wrong:
            problems[order_id] = wrong
    for order_id, (held, _) in reservations.items():
        if order_id not in views and held == "reserved":
            problems[order_id] = "stock reserved for an order the orders service does not know"
    return problems


def _stock_mismatch(status: str, items: dict[str, int], held: str, lines: dict[str, int]) -> str:
    expected = {"confirmed": "reserved", "shipped": "committed"}.get(status)
    if expected is not None:
        if held != expected:
            return f"order {status}, its reservation {held}"
        if lines != items:
            return f"order {status} for {items}, stock held {lines}"
    elif status in ("rejected", "cancelled") and held not in ("failed", "released"):
        return f"order {status}, its reservation {held}"
    return ""


async def _unsettled_payments(orders: asyncpg.Connection) -> Problems:
    rows = await orders.fetch(
        """
        SELECT p.order_id, v.status
          FROM payments p
          JOIN order_views v ON v.id = p.order_id
          JOIN order_sagas s ON s.order_id = p.order_id
         WHERE p.status = 'authorized' AND s.step = 'done'
           AND v.status NOT IN ('confirmed', 'shipped')
        """
    )
    return {str(row["order_id"]): f"order {row['status']}, payment kept" for row in rows}


async def _unpublished(orders: asyncpg.Connection, products: asyncpg.Connection) -> Problems:
    problems: Problems = {}
    for name, conn in (("orders", orders), ("products", products)):
        for row in await conn.fetch(
            "SELECT id, routing_key, attempts, last_error FROM outbox WHERE published_at IS NULL"
        ):
            problems[f"{name} outbox {row['id']}"] = (
                f"{row['routing_key']} unpublished after {row['attempts']} attempt(s)"
                + (f" ({row['last_error']})" if row["last_error"] else "")
            )
    return problems


async def _reserved_totals(products: asyncpg.Connection) -> Problems:
    rows = await products.fetch(
        """
        WITH held AS (
            SELECT l.product_id, sum(l.quantity) AS quantity
              FROM reservation_lines l JOIN reservations r USING (order_id)
             WHERE r.status = 'reserved'
             GROUP BY l.product_id
        )
        SELECT i.product_id, i.reserved, coalesce(h.quantity, 0) AS held
          FROM inventory i FULL JOIN held h USING (product_id)
         WHERE i.reserved IS DISTINCT FROM coalesce(h.quantity, 0)
        """
    )
    return {
        str(row["product_id"]): f"reserved {row['reserved']}, reservations hold {row['held']}"
        for row in rows
    }


async def _double_authorizations(orders: asyncpg.Connection) -> Problems:
    rows = await orders.fetch(
        """
        WITH authorized AS (
            SELECT order_id, count(*) AS n, min(data ->> 'payment_id') AS payment_id
              FROM order_events WHERE type = 'payment.authorized'
             GROUP BY order_id
        )
        SELECT a.order_id, a.n, a.payment_id, p.payment_id::text AS ledger
          FROM authorized a LEFT JOIN payments p USING (order_id)
         WHERE a.n > 1 OR p.payment_id IS NULL OR a.payment_id <> p.payment_id::text
        """
    )
    problems: Problems = {}
    for row in rows:
        if row["n"] > 1:
            problems[str(row["order_id"])] = f"{row['n']} payment.authorized events"
        else:
            problems[str(row["order_id"])] = (
                f"payment.authorized names {row['payment_id']}, the ledger {row['ledger']}"
            )
    return problems


async def _read_model(orders_dsn: str) -> Problems:
    differing = await check_read_model(orders_dsn)
    return dict.fromkeys(differing, "view differs from a replay of its stream")


async def _parked(amqp_url: str, queues: Sequence[str]) -> Problems:
    problems: Problems = {}
    connection = await aiormq.connect(amqp_url)
    try:
        for queue in queues:
            name = parking_queue_name(queue)
            channel = await connection.channel()
            try:
                declared = await channel.queue_declare(name, passive=True)
            except ChannelNotFoundEntity:
                continue  # never declared: nothing was parked
            for _ in range(min(declared.message_count or 0, SHOWN)):
                # Unacknowledged: the message goes back to the queue when the channel closes.
                message = await channel.basic_get(name, no_ack=False)
                if message.delivery_tag is None:
                    break
                parked = parked_message(message)
                problems[f"{name} {parked.message_id or uuid.uuid4()}"] = (
                    f"{parked.routing_key} parked after {parked.attempts} attempt(s): "
                    f"{parked.reason or 'no reason given'}"
                )
            for extra in range(SHOWN, declared.message_count or 0):
                problems[f"{name} #{extra + 1}"] = "parked (not read)"
            await channel.close()
    finally:
        await connection.close()
    return problems

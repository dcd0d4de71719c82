"""The read model's table (``order_views``): reads, the inline projection, rebuilds, figures."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from core.db import Connection
from services.orders.aggregate import NewEvent, StoredEvent
from services.orders.projection import VIEW_COLUMNS, OrderView, apply, fold, view_of
from services.orders.repository.sagas import StepChange, step_assignments
from services.orders.repository.store import Store
from services.orders.repository.streams import ConcurrentAppend, stored_event

__all__ = ["ReadModelStore"]

_VIEW = ", ".join(VIEW_COLUMNS)
_PLACEHOLDERS = ", ".join(f"${i}" for i in range(1, len(VIEW_COLUMNS) + 1))
_UPDATES = ", ".join(f"{c} = EXCLUDED.{c}" for c in VIEW_COLUMNS if c != "id")
_VIEW_TYPES = {
    "id": "uuid",
    "user_id": "uuid",
    "status": "text",
    "items": "jsonb",
    "total_cents": "bigint",
    "currency": "text",
    "reason": "text",
    "shipping_address": "jsonb",
    "version": "integer",
}
# Events appended in a transaction all get its now() as occurred_at: so do the view's times.
# The view's id is the stream's order id ($1, not its copy $5): the statement's three writes
# name one value of the distribution column, which keeps it on one shard (docs/scaling.md).
_VIEW_VALUES = (
    ", ".join(
        "$1::uuid" if c == "id" else f"${i}::{_VIEW_TYPES[c]}"
        for i, c in enumerate(VIEW_COLUMNS[:-2], start=5)
    )
    + f", coalesce(${5 + len(VIEW_COLUMNS) - 2}::timestamptz, now()), now()"
)
_STEP = 5 + len(VIEW_COLUMNS) - 1  # the first parameter of the saga's step
_APPEND_PROJECTED = f"""
    WITH appended AS (
        INSERT INTO order_events (order_id, seq, type, data)
        SELECT $1, $2 + n, t, d
          FROM unnest($3::text[], $4::jsonb[]) WITH ORDINALITY AS e(t, d, n)
        RETURNING order_id, seq, type, data, occurred_at
    ), projected AS (
        INSERT INTO order_views ({_VIEW})
        SELECT {_VIEW_VALUES} WHERE $5::uuid IS NOT NULL
        ON CONFLICT (id) DO UPDATE SET {_UPDATES}
    ), stepped AS (
        UPDATE order_sagas SET {step_assignments(_STEP)}
         WHERE order_id = $1 AND ${_STEP}::text IS NOT NULL
    )
    SELECT order_id, seq, type, data, occurred_at FROM appended
"""  # noqa: S608  # nosec B608: constant columns, values are parameters


class ReadModelStore(Store):
    """Reads the order views, and writes them from the streams."""

    # reads -------------------------------------------------------------------------------------

    async def get_view(self, order_id: uuid.UUID) -> OrderView | None:
        """An order's view."""
        row = await self.pool.fetchrow(
            f"SELECT {_VIEW} FROM order_views WHERE id = $1",  # noqa: S608  # nosec B608: constant columns
            order_id,
        )
        return view_of(row) if row is not None else None

    async def list_views(
        self,
        *,
        user_id: uuid.UUID | None,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> list[OrderView]:
        """Views newest first, of one user or all, after a keyset position."""
        rows = await self.pool.fetch(
            f"""
            SELECT {_VIEW} FROM order_views
             WHERE ($1::uuid IS NULL OR user_id = $1)
               AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
             ORDER BY created_at DESC, id DESC
             LIMIT $4
            """,  # noqa: S608  # nosec B608: constant columns, values are parameters
            user_id,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        return [view_of(r) for r in rows]

    async def business_figures(self) -> dict[str, Any]:
        """Orders by status and the revenue of confirmed and shipped orders, per currency (the
        dashboard's figures)."""
        rows = await self.pool.fetch(
            "SELECT status, currency, count(*) AS n, sum(total_cents) AS cents"
            "  FROM order_views GROUP BY status, currency"
        )
        by_status: dict[str, int] = {}
        revenue: dict[str, int] = {}
        for row in rows:
            by_status[row["status"]] = by_status.get(row["status"], 0) + int(row["n"])
            if row["status"] in ("confirmed", "shipped"):
                revenue[row["currency"]] = revenue.get(row["currency"], 0) + int(row["cents"])
        return {"orders_by_status": by_status, "revenue_cents": revenue}

    # the projection ----------------------------------------------------------------------------

    async def project(
        self,
        conn: Connection,
        order_id: uuid.UUID,
        events: list[StoredEvent],
        *,
        before: list[StoredEvent] | None = None,
    ) -> OrderView | None:
        """Apply newly appended ``events`` of one order to its view (inside their transaction);
        return the view as stored. ``before``: the stream up to them, when the caller has read
        it (the view is then folded from it instead of read back)."""
        if not events:
            return None
        if events[0].type == "order.placed":
            row = None
        elif before is not None:
            row = fold(None, before)
        else:
            row = await self._load(conn, order_id)
        row = fold(row, events)
        if row is None:
            return None
        await self._store(conn, row)
        return view_of(row)

    async def append_projected(
        self,
        conn: Connection,
        order_id: uuid.UUID,
        expected: int,
        events: list[NewEvent],
        *,
        before: list[StoredEvent],
        step: StepChange | None = None,
    ) -> tuple[list[StoredEvent], OrderView | None]:
        """Append ``events`` after version ``expected`` of a stream whose events so far are
        ``before``, project them into the view and move the saga to ``step``: one statement,
        the work of ``append``, ``project`` and ``set_step`` (``ConcurrentAppend`` if the stream
        moved). The events as stored, and the view after them."""
        if not events:
            return [], None
        start = fold(None, before)
        pending = [
            StoredEvent(order_id, expected + n, e.type, e.data, datetime.min)
            for n, e in enumerate(events, start=1)
        ]
        row = fold(start, pending)
        values = [None] * (len(VIEW_COLUMNS) - 1)
        if row is not None:
            values = [row[c] for c in VIEW_COLUMNS[:-2]]
            values.append(start["created_at"] if start is not None else None)
        try:
            rows = await conn.fetch(
                _APPEND_PROJECTED,
                order_id,
                expected,
                [e.type for e in events],
                [e.data for e in events],
                *values,
                *(step.args() if step is not None else (None, None, False, None)),
            )
        except asyncpg.UniqueViolationError as exc:
            raise ConcurrentAppend(order_id) from exc
        stored = sorted((stored_event(r) for r in rows), key=lambda e: e.seq)
        final = fold(start, stored)
        return stored, view_of(final) if final is not None else None

    async def rebuild(self, conn: Connection) -> int:
        """Replace the whole read model by folding every stream; return the number of orders.

        Run inside a transaction: the table is locked against concurrent projections (writers
        wait, readers keep reading the old rows until the commit). Streams are read through a
        cursor, one order at a time, so memory stays flat whatever their number.
        """
        if not conn.is_in_transaction():
            raise RuntimeError("rebuild needs a connection inside a transaction")
        await conn.execute("LOCK TABLE order_views IN EXCLUSIVE MODE")
        await conn.execute("DELETE FROM order_views")
        count = 0
        current: uuid.UUID | None = None
        row: dict[str, Any] | None = None
        async for record in conn.cursor(
            "SELECT order_id, seq, type, data, occurred_at FROM order_events"
            " ORDER BY order_id, seq",
            prefetch=500,
        ):
            if record["order_id"] != current:
                if row is not None:
                    await self._store(conn, row)
                    count += 1
                current, row = record["order_id"], None
            row = apply(row, stored_event(record))
        if row is not None:
            await self._store(conn, row)
            count += 1
        return count

    async def differing_from_replay(self) -> list[uuid.UUID]:
        """The ids of orders whose live view differs from a replay of their stream (the replay
        is rolled back: nothing changes)."""
        async with self.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                # Locked before the copy, as the replay will be: an order projected in between
                # would otherwise differ from its replay once, with nothing wrong.
                await conn.execute("LOCK TABLE order_views IN EXCLUSIVE MODE")
                await conn.execute(
                    f"CREATE TEMP TABLE live_views ON COMMIT DROP AS "  # noqa: S608  # nosec B608: constant columns
                    f"SELECT {_VIEW} FROM order_views"
                )
                await self.rebuild(conn)
                rows = await conn.fetch(
                    f"""
                    SELECT coalesce(a.id, b.id) AS id FROM
                      (SELECT {_VIEW} FROM live_views EXCEPT SELECT {_VIEW} FROM order_views) a
                      FULL JOIN
                      (SELECT {_VIEW} FROM order_views EXCEPT SELECT {_VIEW} FROM live_views) b
                      ON a.id = b.id
                    """  # noqa: S608  # nosec B608: constant columns
                )
            finally:
                await tx.rollback()
        return [r["id"] for r in rows]

    async def _load(self, conn: Connection, order_id: uuid.UUID) -> dict[str, Any] | None:
        row = await conn.fetchrow(
            f"SELECT {_VIEW} FROM order_views WHERE id = $1",  # noqa: S608  # nosec B608: constant columns
            order_id,
        )
        return dict(row) if row is not None else None

    async def _store(self, conn: Connection, row: dict[str, Any]) -> None:
        await conn.execute(
            f"""
            INSERT INTO order_views ({_VIEW}) VALUES ({_PLACEHOLDERS})
            ON CONFLICT (id) DO UPDATE SET {_UPDATES}
            """,  # noqa: S608  # nosec B608: constant columns, values are parameters
            *(row[c] for c in VIEW_COLUMNS),
        )

"""The read model's table (``order_views``): reads, the inline projection, rebuilds, figures."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from core.db import Connection
from services.orders.aggregate import StoredEvent
from services.orders.projection import VIEW_COLUMNS, OrderView, apply, fold, view_of
from services.orders.repository.store import Store
from services.orders.repository.streams import stored_event

__all__ = ["ReadModelStore"]

_VIEW = ", ".join(VIEW_COLUMNS)
_PLACEHOLDERS = ", ".join(f"${i}" for i in range(1, len(VIEW_COLUMNS) + 1))
_UPDATES = ", ".join(f"{c} = EXCLUDED.{c}" for c in VIEW_COLUMNS if c != "id")


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

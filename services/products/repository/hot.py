"""SQL of the cache warm-up's hot set: which products the orders reserve most."""

from __future__ import annotations

import uuid

from services.products.repository.base import Repository

__all__ = ["HotRepository"]


class HotRepository(Repository):
    """Reads ``reservation_lines`` (written by the order saga) to rank products by demand."""

    async def most_reserved(self, limit: int, *, within_days: int = 30) -> list[uuid.UUID]:
        """Up to ``limit`` existing products, the most often reserved first (then the most
        units), counting the reservations of the last ``within_days`` days, whatever became of
        them: a released or failed order still says what customers look at."""
        if limit <= 0:
            return []
        rows = await self.pool.fetch(
            """
            SELECT l.product_id
              FROM reservation_lines l
              JOIN reservations r ON r.order_id = l.order_id
             WHERE r.created_at > now() - make_interval(days => $2)
               AND EXISTS (SELECT 1 FROM products p WHERE p.id = l.product_id)
             GROUP BY l.product_id
             ORDER BY count(*) DESC, sum(l.quantity) DESC, l.product_id
             LIMIT $1
            """,
            limit,
            within_days,
        )
        return [row["product_id"] for row in rows]

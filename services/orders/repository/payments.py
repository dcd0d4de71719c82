"""The simulated payment provider's ledger (``payments``): one payment per order."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from services.orders.repository.store import Store

__all__ = ["PaymentRecord", "PaymentsLedger"]


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """An order's payment as the ledger holds it."""

    payment_id: uuid.UUID
    status: Literal["authorized", "declined", "refunded"]
    amount_cents: int


class PaymentsLedger(Store):
    """Records authorizations and refunds, once per order."""

    async def authorize(
        self,
        order_id: uuid.UUID,
        *,
        payment_id: uuid.UUID,
        status: Literal["authorized", "declined"],
        amount_cents: int,
        currency: str,
    ) -> PaymentRecord:
        """Record the order's authorization, unless it has one: then count the attempt and keep
        the first. The order's payment as recorded.

        ``EXCLUDED.updated_at`` (the column's default, ``now()``) rather than ``now()`` itself:
        Citus refuses a function that is not immutable in ``DO UPDATE SET``."""
        row = await self.pool.fetchrow(
            """
            INSERT INTO payments (order_id, payment_id, status, amount_cents, currency,
                                  authorizations)
            VALUES ($1, $2, $3, $4, $5, 1)
            ON CONFLICT (order_id) DO UPDATE
               SET authorizations = payments.authorizations + 1,
                   updated_at = EXCLUDED.updated_at
            RETURNING payment_id, status, amount_cents
            """,
            order_id,
            payment_id,
            status,
            amount_cents,
            currency,
        )
        assert row is not None
        return PaymentRecord(row["payment_id"], row["status"], row["amount_cents"])

    async def refund(self, order_id: uuid.UUID) -> PaymentRecord | None:
        """Mark the order's authorized payment refunded; the payment as it was before (``None``:
        the order has none). A declined or refunded payment is left as it is."""
        async with self.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT payment_id, status, amount_cents FROM payments WHERE order_id = $1"
                " FOR UPDATE",
                order_id,
            )
            if row is None:
                return None
            if row["status"] == "authorized":
                await conn.execute(
                    "UPDATE payments SET status = 'refunded', updated_at = now()"
                    " WHERE order_id = $1",
                    order_id,
                )
            return PaymentRecord(row["payment_id"], row["status"], row["amount_cents"])

"""Saga rows (``order_sagas``) and placement requests (``order_requests``).

Placement writes both in one transaction: the idempotency key's request row, then the saga
that the orchestrator drives from then on.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from core.db import Connection
from services.orders.repository.store import Store

__all__ = ["SagaRow", "SagaStore", "StepChange", "step_assignments"]


@dataclass(frozen=True, slots=True)
class SagaRow:
    """The orchestrator's persisted state of one order."""

    order_id: uuid.UUID
    step: str
    deadline: datetime | None
    lease_until: datetime | None
    payment_token: str
    correlation_id: str | None
    started_at: datetime
    now: datetime


@dataclass(frozen=True, slots=True)
class StepChange:
    """A saga's next step (see ``SagaStore.set_step``)."""

    step: str
    deadline_in: float | None = None
    keep_lease: bool = False
    lease_in: float | None = None

    def args(self) -> tuple[str, float | None, bool, float | None]:
        """The parameters of ``step_assignments``, in their order."""
        return self.step, self.deadline_in, self.keep_lease, self.lease_in


def step_assignments(first: int) -> str:
    """The ``SET`` list moving a saga to a step; its parameters are ``${first}`` onwards:
    step, deadline_in, keep_lease, lease_in (``StepChange.args``)."""
    step, deadline, keep, lease = (f"${first + i}" for i in range(4))
    return f"""
        step = {step}::text,
        deadline = CASE WHEN {deadline}::float8 IS NULL THEN NULL
                        ELSE now() + make_interval(secs => {deadline}::float8) END,
        lease_until = CASE
            WHEN {lease}::float8 IS NOT NULL
                THEN clock_timestamp() + make_interval(secs => {lease}::float8)
            WHEN {keep}::bool THEN lease_until END,
        updated_at = now()
    """


class SagaStore(Store):
    """Reads and writes sagas and the placement requests that start them."""

    # placement ---------------------------------------------------------------------------------

    async def claim_request(
        self,
        conn: Connection,
        *,
        user_id: uuid.UUID,
        key_digest: str,
        fingerprint: str,
        order_id: uuid.UUID,
    ) -> tuple[uuid.UUID, str] | None:
        """Record that ``key_digest`` of ``user_id`` places ``order_id``; if the key was used
        before, ``(order_id, fingerprint)`` of that use instead (waits for a concurrent use of
        the same key to commit or roll back)."""
        inserted = await conn.fetchval(
            """
            INSERT INTO order_requests (user_id, key_digest, fingerprint, order_id)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (user_id, key_digest) DO NOTHING
            RETURNING order_id
            """,
            user_id,
            key_digest,
            fingerprint,
            order_id,
        )
        if inserted is not None:
            return None
        row = await conn.fetchrow(
            "SELECT order_id, fingerprint FROM order_requests"
            " WHERE user_id = $1 AND key_digest = $2",
            user_id,
            key_digest,
        )
        assert row is not None
        return row["order_id"], row["fingerprint"]

    async def create_saga(
        self,
        conn: Connection,
        order_id: uuid.UUID,
        *,
        token: str,
        deadline_in: float,
        correlation_id: str | None,
    ) -> None:
        """Start an order's saga at the reservation step."""
        await conn.execute(
            """
            INSERT INTO order_sagas (order_id, step, deadline, payment_token, correlation_id)
            VALUES ($1, 'reserving', now() + make_interval(secs => $2), $3, $4)
            """,
            order_id,
            deadline_in,
            token,
            correlation_id,
        )

    # transitions -------------------------------------------------------------------------------

    async def lock_saga(self, conn: Connection, order_id: uuid.UUID) -> SagaRow | None:
        """The saga of an order, locked until the transaction ends (serializes its writers)."""
        row = await conn.fetchrow(
            """
            SELECT order_id, step, deadline, lease_until, payment_token, correlation_id, started_at,
                   clock_timestamp() AS now
              FROM order_sagas WHERE order_id = $1 FOR UPDATE
            """,
            order_id,
        )
        return SagaRow(**dict(row)) if row is not None else None

    async def set_step(
        self,
        conn: Connection,
        order_id: uuid.UUID,
        step: str,
        *,
        deadline_in: float | None = None,
        keep_lease: bool = False,
        lease_in: float | None = None,
    ) -> None:
        """Move the saga to ``step`` (with a new deadline, or none), releasing its lease unless
        ``keep_lease`` (its holder is still running a call whose outcome matters), or leasing it
        for ``lease_in`` seconds (the caller runs the step once this transaction commits)."""
        await conn.execute(
            f"UPDATE order_sagas SET {step_assignments(2)} WHERE order_id = $1",  # noqa: S608  # nosec B608: constant SQL
            order_id,
            *StepChange(step, deadline_in, keep_lease, lease_in).args(),
        )

    # the orchestrator's work -------------------------------------------------------------------

    async def expired(self, step: str, limit: int) -> list[uuid.UUID]:
        """Orders whose saga waits at ``step`` past its deadline."""
        rows = await self.pool.fetch(
            """
            SELECT order_id FROM order_sagas
             WHERE step = $1 AND deadline < clock_timestamp()
             ORDER BY deadline LIMIT $2
            """,
            step,
            limit,
        )
        return [r["order_id"] for r in rows]

    async def claim(
        self, step: str, limit: int, *, lease: float, skip: list[uuid.UUID]
    ) -> list[SagaRow]:
        """Lease up to ``limit`` sagas at ``step`` that nobody holds (or whose holder died),
        for ``lease`` seconds, leaving out those in ``skip`` (the caller's own)."""
        rows = await self.pool.fetch(
            """
            WITH due AS (
                SELECT order_id FROM order_sagas
                 WHERE step = $1 AND (lease_until IS NULL OR lease_until < clock_timestamp())
                   AND order_id <> ALL($4::uuid[])
                 ORDER BY deadline NULLS FIRST LIMIT $2
                 FOR UPDATE SKIP LOCKED
            )
            UPDATE order_sagas s
               SET lease_until = clock_timestamp() + make_interval(secs => $3),
                   updated_at = now()
              FROM due WHERE s.order_id = due.order_id
            RETURNING s.order_id, s.step, s.deadline, s.lease_until, s.payment_token,
                      s.correlation_id, s.started_at, clock_timestamp() AS now
            """,
            step,
            limit,
            lease,
            skip,
        )
        return [SagaRow(**dict(r)) for r in rows]

    async def renew(self, order_ids: list[uuid.UUID], *, lease: float) -> None:
        """Extend the leases of sagas whose step this instance is running (a heartbeat)."""
        if order_ids:
            await self.pool.execute(
                """
                UPDATE order_sagas SET lease_until = clock_timestamp() + make_interval(secs => $2)
                 WHERE order_id = ANY($1::uuid[]) AND lease_until IS NOT NULL
                """,
                order_ids,
                lease,
            )

    async def release(self, order_id: uuid.UUID) -> None:
        """Give up the lease of a saga whose step this instance no longer runs."""
        await self.pool.execute(
            "UPDATE order_sagas SET lease_until = NULL WHERE order_id = $1 AND step <> 'done'",
            order_id,
        )

    # figures -----------------------------------------------------------------------------------

    async def in_flight(self) -> int:
        """How many sagas are not done."""
        count: int = await self.pool.fetchval(
            "SELECT count(*) FROM order_sagas WHERE step <> 'done'"
        )
        return count

    async def sagas_by_step(self) -> dict[str, int]:
        """How many sagas are at each step."""
        rows = await self.pool.fetch("SELECT step, count(*) AS n FROM order_sagas GROUP BY step")
        return {r["step"]: r["n"] for r in rows}

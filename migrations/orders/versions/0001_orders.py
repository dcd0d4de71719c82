"""Order event streams, saga state, the read model and the simulated payment provider.

``order_events`` is the source of truth: an append-only stream per order whose unique
``(order_id, seq)`` makes concurrent writers of one order conflict (optimistic concurrency);
``position`` orders all streams for a rebuild. ``order_sagas`` holds the orchestrator's state
of each order (step, deadline, lease), written in the transaction that appends the step's
events. ``order_views`` is the denormalized read model the projection maintains.
``payments`` belongs to the simulated payment provider: one row per order, so authorizing
twice charges once.

Revision ID: 0001
Revises: (none)
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the event store, saga, read model and payment tables."""
    op.execute(
        """
        CREATE TABLE order_events (
            position    bigserial PRIMARY KEY,
            order_id    uuid NOT NULL,
            seq         integer NOT NULL CHECK (seq >= 1),
            type        text NOT NULL,
            data        jsonb NOT NULL,
            occurred_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT order_events_order_seq_key UNIQUE (order_id, seq)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE order_sagas (
            order_id      uuid PRIMARY KEY,
            step          text NOT NULL CHECK (step IN
                              ('reserving', 'authorizing', 'refunding', 'done')),
            deadline      timestamptz,
            lease_until   timestamptz,
            payment_token text NOT NULL,
            correlation_id text,
            started_at    timestamptz NOT NULL DEFAULT now(),
            updated_at    timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX order_sagas_due ON order_sagas (step, deadline) WHERE step <> 'done'")
    op.execute(
        """
        CREATE TABLE order_views (
            id           uuid PRIMARY KEY,
            user_id      uuid NOT NULL,
            status       text NOT NULL,
            items        jsonb NOT NULL,
            total_cents  bigint NOT NULL,
            currency     text NOT NULL,
            reason       text,
            shipping_address jsonb NOT NULL,
            version      integer NOT NULL,
            created_at   timestamptz NOT NULL,
            updated_at   timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX order_views_newest ON order_views (created_at DESC, id DESC)")
    op.execute(
        "CREATE INDEX order_views_user_newest ON order_views (user_id, created_at DESC, id DESC)"
    )
    op.execute(
        """
        CREATE TABLE payments (
            order_id      uuid PRIMARY KEY,
            payment_id    uuid NOT NULL UNIQUE,
            status        text NOT NULL CHECK (status IN ('authorized', 'declined', 'refunded')),
            amount_cents  bigint NOT NULL,
            currency      text NOT NULL,
            authorizations integer NOT NULL DEFAULT 0,
            created_at    timestamptz NOT NULL DEFAULT now(),
            updated_at    timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    """Drop them."""
    for table in ("payments", "order_views", "order_sagas", "order_events"):
        op.execute(f"DROP TABLE {table}")

"""Keys that a hash-distributed (Citus) orders store can enforce: each includes its table's
distribution column.

The distribution column of the event store, the sagas, the payments and the read model is the
order id (one colocation group: an order's stream, saga, payment and view share a shard);
``order_requests`` is distributed by ``user_id`` (it is looked up by ``(user_id, key)`` before
the order id exists). See ``services.orders.repository.distribution`` and docs/scaling.md.

- ``order_events``: the primary key becomes ``(order_id, seq)`` (it was the unique constraint
  already); ``position`` stays, unique through its sequence, with a plain index for readers in
  global order (a distributed table cannot enforce a key without the distribution column).
- ``payments``: the standalone ``UNIQUE (payment_id)`` goes; nothing looks a payment up by its
  id, and ``order_id`` (the primary key) already makes one payment per order.

``order_sagas``, ``order_views`` and ``order_requests`` already qualify; nothing has a foreign
key. Rewrites two indexes under an exclusive lock: run it in a maintenance window on a large
table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Key ``order_events`` by ``(order_id, seq)``; drop ``payments``' standalone unique key."""
    op.execute("ALTER TABLE order_events DROP CONSTRAINT order_events_pkey")
    op.execute("ALTER TABLE order_events DROP CONSTRAINT order_events_order_seq_key")
    op.execute(
        "ALTER TABLE order_events ADD CONSTRAINT order_events_pkey PRIMARY KEY (order_id, seq)"
    )
    op.execute("CREATE INDEX order_events_position ON order_events (position)")
    op.execute("ALTER TABLE payments DROP CONSTRAINT payments_payment_id_key")


def downgrade() -> None:
    """Restore the keys of 0001."""
    op.execute("ALTER TABLE payments ADD CONSTRAINT payments_payment_id_key UNIQUE (payment_id)")
    op.execute("DROP INDEX order_events_position")
    op.execute("ALTER TABLE order_events DROP CONSTRAINT order_events_pkey")
    op.execute(
        "ALTER TABLE order_events ADD CONSTRAINT order_events_order_seq_key UNIQUE (order_id, seq)"
    )
    op.execute("ALTER TABLE order_events ADD CONSTRAINT order_events_pkey PRIMARY KEY (position)")

"""An index of unfinished sagas by start: the oldest one for the saga backlog figures
(``services.orders.health``) is its first entry, whatever the backlog.

``order_sagas_due`` (``(step, deadline) WHERE step <> 'done'``) holds the same rows, in the
order of the runner's polls: the oldest would be a scan of all of them. The index is partial,
so that it stays as small as the backlog. A plain ``CREATE INDEX`` (the migrations run in a
transaction): it holds off writes to ``order_sagas`` while it reads the whole table, finished
sagas included. On a large table, create it by hand first with ``CREATE INDEX CONCURRENTLY``
and the same definition (``IF NOT EXISTS`` makes this migration keep it; check that it is
valid, ``pg_index.indisvalid``: a concurrent build that failed leaves an invalid one).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Index unfinished sagas by ``started_at``."""
    op.execute(
        "CREATE INDEX IF NOT EXISTS order_sagas_pending_started"
        " ON order_sagas (started_at) WHERE step <> 'done'"
    )


def downgrade() -> None:
    """Drop the index."""
    op.execute("DROP INDEX order_sagas_pending_started")

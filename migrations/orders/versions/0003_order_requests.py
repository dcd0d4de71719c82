"""Idempotency keys of placements, kept with the orders they made.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """A placement's (user, key) -> its order and request fingerprint, written in the
    transaction that places the order, so that a key outlives a crash between that commit and
    the response being remembered in Redis."""
    op.execute(
        """
        CREATE TABLE order_requests (
            user_id     uuid NOT NULL,
            key_digest  text NOT NULL,
            fingerprint text NOT NULL,
            order_id    uuid NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, key_digest)
        )
        """
    )


def downgrade() -> None:
    """Drop it."""
    op.execute("DROP TABLE order_requests")

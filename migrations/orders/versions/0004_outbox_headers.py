"""The headers an outbox row is published with (the trace context of its transaction).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from collections.abc import Sequence

from alembic import op

from core.bus import schema

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable outbox.headers column."""
    for statement in schema.UPGRADE_HEADERS:
        op.execute(statement)


def downgrade() -> None:
    """Drop it."""
    for statement in schema.DOWNGRADE_HEADERS:
        op.execute(statement)

"""Outbox and inbox of the bus.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

from core.bus import schema

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the outbox and inbox tables."""
    for statement in schema.UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    """Drop them."""
    for statement in schema.DOWNGRADE:
        op.execute(statement)

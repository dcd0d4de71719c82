"""Refresh families as rows of their own, so that rotation and revocation serialize on one lock.

Revoking by updating every token row of a family missed a token inserted by a concurrent,
not yet committed rotation; a single family row, locked by both, cannot be missed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create refresh_families from the existing tokens and link tokens to it."""
    op.execute(
        """
        CREATE TABLE refresh_families (
            id         uuid PRIMARY KEY,
            user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz
        )
        """
    )
    op.execute(
        """
        INSERT INTO refresh_families (id, user_id, created_at, revoked_at)
        SELECT family_id, (array_agg(user_id))[1], min(issued_at), max(revoked_at)
          FROM refresh_tokens
         GROUP BY family_id
        """
    )
    op.execute("CREATE INDEX refresh_families_user ON refresh_families (user_id)")
    op.execute(
        """
        ALTER TABLE refresh_tokens
          ADD CONSTRAINT refresh_tokens_family_fk
          FOREIGN KEY (family_id) REFERENCES refresh_families (id) ON DELETE CASCADE
        """
    )


def downgrade() -> None:
    """Drop the families (token rows keep their own revoked_at)."""
    op.execute("ALTER TABLE refresh_tokens DROP CONSTRAINT refresh_tokens_family_fk")
    op.execute("DROP TABLE refresh_families")

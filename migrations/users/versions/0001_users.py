"""Users and refresh tokens.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the users and refresh_tokens tables."""
    op.execute(
        """
        CREATE TABLE users (
            id            uuid PRIMARY KEY,
            email         text NOT NULL,
            full_name     text NOT NULL,
            password_hash text NOT NULL,
            roles         text[] NOT NULL DEFAULT ARRAY['customer'],
            created_at    timestamptz NOT NULL DEFAULT now(),
            updated_at    timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT users_email_lower CHECK (email = lower(email)),
            CONSTRAINT users_email_key UNIQUE (email)
        )
        """
    )
    op.execute("CREATE INDEX users_created_at_id ON users (created_at DESC, id DESC)")
    op.execute(
        """
        CREATE TABLE refresh_tokens (
            jti        uuid PRIMARY KEY,
            family_id  uuid NOT NULL,
            user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            issued_at  timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            used_at    timestamptz,
            revoked_at timestamptz
        )
        """
    )
    op.execute("CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id)")
    op.execute("CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id)")


def downgrade() -> None:
    """Drop what upgrade created."""
    op.execute("DROP TABLE refresh_tokens")
    op.execute("DROP TABLE users")

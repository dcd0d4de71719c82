"""SQL of the users service (asyncpg, parameterized only): the one place that knows its tables."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from core.db import Connection, Repository
from services.users.models import RefreshRecord, User

__all__ = ["UsersRepository"]


def _user(row: asyncpg.Record | None) -> User | None:
    return User(**dict(row)) if row is not None else None


class UsersRepository(Repository):
    """Reads and writes users and refresh tokens (methods take an optional ``conn``: see
    ``core.db.Repository``)."""

    async def count_users(self) -> int:
        """How many accounts exist (the dashboard's registrations figure)."""
        count: int = await self.pool.fetchval("SELECT count(*) FROM users")
        return count

    async def insert_user(
        self,
        *,
        email: str,
        full_name: str,
        password_hash: str,
        roles: Sequence[str],
        conn: Connection | None = None,
    ) -> User | None:
        """Insert a user; ``None`` when the email is taken (atomic under concurrency)."""
        row = await self._db(conn).fetchrow(
            """
            INSERT INTO users (id, email, full_name, password_hash, roles)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (email) DO NOTHING
            RETURNING id, email, full_name, password_hash, roles, created_at, updated_at
            """,
            uuid.uuid4(),
            email,
            full_name,
            password_hash,
            list(roles),
        )
        return _user(row)

    async def get_by_email(self, email: str, conn: Connection | None = None) -> User | None:
        """The user with this (lower-cased) email."""
        row = await self._db(conn).fetchrow(
            """
            SELECT id, email, full_name, password_hash, roles, created_at, updated_at
            FROM users
            WHERE email = $1
            """,
            email,
        )
        return _user(row)

    async def get(self, user_id: uuid.UUID, conn: Connection | None = None) -> User | None:
        """The user with this id."""
        row = await self._db(conn).fetchrow(
            """
            SELECT id, email, full_name, password_hash, roles, created_at, updated_at
            FROM users
            WHERE id = $1
            """,
            user_id,
        )
        return _user(row)

    async def update_profile(
        self,
        user_id: uuid.UUID,
        *,
        full_name: str | None = None,
        password_hash: str | None = None,
        conn: Connection | None = None,
    ) -> User | None:
        """Change the name and/or password hash; ``None`` if the user is gone."""
        row = await self._db(conn).fetchrow(
            """
            UPDATE users
               SET full_name = COALESCE($2, full_name),
                   password_hash = COALESCE($3, password_hash),
                   updated_at = now()
             WHERE id = $1
            RETURNING id, email, full_name, password_hash, roles, created_at, updated_at
            """,
            user_id,
            full_name,
            password_hash,
        )
        return _user(row)

    async def set_roles(
        self, user_id: uuid.UUID, roles: Sequence[str], conn: Connection | None = None
    ) -> tuple[list[str], list[str]] | None:
        """Replace the roles; return ``(previous, current)``, or ``None`` for no such user."""
        row = await self._db(conn).fetchrow(
            """
            UPDATE users AS u
               SET roles = $2, updated_at = now()
              FROM (SELECT id, roles FROM users WHERE id = $1 FOR UPDATE) AS old
             WHERE u.id = old.id
            RETURNING old.roles AS previous, u.roles AS current
            """,
            user_id,
            list(roles),
        )
        return (list(row["previous"]), list(row["current"])) if row is not None else None

    async def list_users(
        self, *, limit: int, after: tuple[datetime, uuid.UUID] | None = None
    ) -> list[User]:
        """Users newest first, starting after the keyset ``after``."""
        if after is None:
            rows = await self.pool.fetch(
                """
                SELECT id, email, full_name, password_hash, roles, created_at, updated_at
                FROM users
                ORDER BY created_at DESC, id DESC
                LIMIT $1
                """,
                limit,
            )
        else:
            rows = await self.pool.fetch(
                """
                SELECT id, email, full_name, password_hash, roles, created_at, updated_at FROM users
                 WHERE (created_at, id) < ($2, $3)
                 ORDER BY created_at DESC, id DESC
                 LIMIT $1
                """,
                limit,
                *after,
            )
        return [User(**dict(row)) for row in rows]

    async def insert_refresh(
        self,
        *,
        jti: uuid.UUID,
        family_id: uuid.UUID,
        user_id: uuid.UUID,
        expires_at: datetime,
        conn: Connection | None = None,
    ) -> None:
        """Record an issued refresh token."""
        await self._db(conn).execute(
            """
            INSERT INTO refresh_tokens (jti, family_id, user_id, expires_at)
            VALUES ($1, $2, $3, $4)
            """,
            jti,
            family_id,
            user_id,
            expires_at,
        )

    async def lock_refresh(self, jti: uuid.UUID, conn: Connection) -> RefreshRecord | None:
        """The refresh token ``jti``, locked until the transaction ends."""
        row = await conn.fetchrow(
            """
            SELECT jti, family_id, user_id, expires_at, used_at, revoked_at
              FROM refresh_tokens WHERE jti = $1 FOR UPDATE
            """,
            jti,
        )
        return RefreshRecord(**dict(row)) if row is not None else None

    async def mark_refresh_used(self, jti: uuid.UUID, conn: Connection) -> None:
        """Mark a refresh token as exchanged."""
        await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE jti = $1", jti)

    async def insert_family(
        self, family_id: uuid.UUID, user_id: uuid.UUID, conn: Connection | None = None
    ) -> None:
        """Record a new session (refresh family)."""
        await self._db(conn).execute(
            "INSERT INTO refresh_families (id, user_id) VALUES ($1, $2)", family_id, user_id
        )

    async def lock_family(self, family_id: uuid.UUID, conn: Connection) -> bool | None:
        """Lock a family until the transaction ends; return whether it is revoked (None: unknown).

        Rotation and revocation both take this lock, so a revocation cannot miss a token that a
        concurrent rotation is issuing.
        """
        row = await conn.fetchrow(
            "SELECT revoked_at FROM refresh_families WHERE id = $1 FOR UPDATE", family_id
        )
        return None if row is None else row["revoked_at"] is not None

    async def revoke_family(self, family_id: uuid.UUID, conn: Connection | None = None) -> None:
        """Revoke a session: none of its refresh tokens works any more."""
        await self._db(conn).execute(
            """
            UPDATE refresh_families SET revoked_at = now()
             WHERE id = $1 AND revoked_at IS NULL
            """,
            family_id,
        )

    async def revoke_user_families(
        self, user_id: uuid.UUID, conn: Connection | None = None
    ) -> None:
        """Revoke every session of a user."""
        await self._db(conn).execute(
            """
            UPDATE refresh_families SET revoked_at = now()
             WHERE user_id = $1 AND revoked_at IS NULL
            """,
            user_id,
        )

    async def share_lock_password(self, user_id: uuid.UUID, conn: Connection) -> str | None:
        """The user's current password hash, locked against changes until the transaction ends."""
        value: str | None = await conn.fetchval(
            "SELECT password_hash FROM users WHERE id = $1 FOR SHARE", user_id
        )
        return value

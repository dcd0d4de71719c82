"""Domain objects of the users service: what the repository returns, the service decides on and
the API shows (through its own response schemas, never with the password hash)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

__all__ = ["RefreshRecord", "User"]


@dataclass(frozen=True, slots=True)
class User:
    """An account."""

    id: uuid.UUID
    email: str
    full_name: str
    password_hash: str
    roles: list[str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    """An issued refresh token (by its ``jti``)."""

    jti: uuid.UUID
    family_id: uuid.UUID
    user_id: uuid.UUID
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None

"""Events the users service publishes (API.md "Bus events"); relayed through the outbox."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel

__all__ = ["UserRegistered", "UserRolesChanged"]


class UserRegistered(BaseModel):
    """``user.registered``: a new account exists."""

    user_id: UUID
    email: str
    full_name: str
    roles: list[str]
    created_at: datetime


class UserRolesChanged(BaseModel):
    """``user.roles_changed``: an admin replaced a user's roles."""

    user_id: UUID
    roles: list[str]
    previous_roles: list[str]

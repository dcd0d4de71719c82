"""Events the users service publishes (API.md "Bus events"); relayed through the outbox."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from core.bus import Event

__all__ = ["UserRegistered", "UserRolesChanged"]


class UserRegistered(Event):
    """``user.registered``: a new account exists."""

    event_type = "user.registered"
    event_version = 1

    user_id: UUID
    email: str
    full_name: str
    roles: list[str]
    created_at: datetime


class UserRolesChanged(Event):
    """``user.roles_changed``: a user's roles were replaced."""

    event_type = "user.roles_changed"
    event_version = 1

    user_id: UUID
    roles: list[str]
    previous_roles: list[str]

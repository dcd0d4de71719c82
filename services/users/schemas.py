"""Request and response bodies of the users service (the public contract in API.md)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, EmailStr, Field, StringConstraints

from core.schemas import InputModel, OutputModel

__all__ = [
    "LoginIn",
    "ProfilePatch",
    "RefreshIn",
    "RegisterIn",
    "Role",
    "RolesIn",
    "RolesOut",
    "TokenPair",
    "UserOut",
]


class Role(StrEnum):
    """The roles a user may hold."""

    customer = "customer"
    admin = "admin"


Email = Annotated[EmailStr, Field(max_length=254), AfterValidator(lambda v: v.lower())]
# Passwords are not stripped: every character the user typed counts.
Password = Annotated[str, StringConstraints(min_length=8, max_length=128, strip_whitespace=False)]
FullName = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class RegisterIn(InputModel):
    """A new account."""

    email: Email
    password: Password
    full_name: FullName


class LoginIn(InputModel):
    """Credentials. Any string is accepted here: a wrong one is a 401, never a hint."""

    email: Annotated[str, StringConstraints(min_length=1, max_length=254)]
    password: Annotated[
        str, StringConstraints(min_length=1, max_length=1024, strip_whitespace=False)
    ]


class RefreshIn(InputModel):
    """A refresh token to exchange for a new pair."""

    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class ProfilePatch(InputModel):
    """Changes to one's own profile; a new password needs the current one."""

    full_name: FullName | None = None
    password: Password | None = None
    current_password: (
        Annotated[str, StringConstraints(min_length=1, max_length=1024, strip_whitespace=False)]
        | None
    ) = None


class RolesIn(InputModel):
    """The complete new set of roles of a user."""

    roles: Annotated[list[Role], Field(min_length=1, max_length=8)]


class UserOut(OutputModel):
    """A user as clients see it (never the password hash)."""

    id: UUID
    email: str
    full_name: str
    roles: list[str]
    created_at: datetime
    updated_at: datetime


class RolesOut(OutputModel):
    """The roles a user now holds."""

    roles: list[str]


class TokenPair(OutputModel):
    """An access token and the refresh token that renews it."""

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (a scheme name, not a secret)
    expires_in: int

"""Request and response bodies of the users service (the public contract in API.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, EmailStr, Field, StringConstraints

from core.schemas import InputModel, OutputModel
from services.users.roles import Permission, Role

__all__ = [
    "LoginIn",
    "Permission",
    "ProfilePatch",
    "RefreshIn",
    "RegisterIn",
    "Role",
    "RoleOut",
    "RolesIn",
    "RolesOut",
    "TokenPair",
    "UserOut",
]


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" for c in word)


# email-validator refuses the special-use domains (RFC 6761 and kin): the schema says so too.
# JSON Schema patterns are ECMA-262 regexes, which have no inline (?i): letters spell both cases.
_SPECIAL_USE = (
    r"@(.+\.)?("
    + "|".join(_any_case(d) for d in ("arpa", "invalid", "local", "localhost", "onion", "test"))
    + ")$"
)
Email = Annotated[
    EmailStr,
    Field(max_length=254, json_schema_extra={"not": {"pattern": _SPECIAL_USE}}),
    AfterValidator(lambda v: v.lower()),
]
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
    permissions: list[str]
    created_at: datetime
    updated_at: datetime


class RoleOut(OutputModel):
    """A role and the permissions it grants."""

    name: Role
    permissions: list[Permission]


class RolesOut(OutputModel):
    """The roles a user now holds."""

    roles: list[str]


class TokenPair(OutputModel):
    """An access token and the refresh token that renews it."""

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (a scheme name, not a secret)
    expires_in: int

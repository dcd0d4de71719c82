"""Business rules of the users service: accounts, sessions, roles. No aiohttp, no SQL."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from core.auth import PasswordHasher, Principal, RevocationStore, TokenCodec
from core.bus import Outbox
from core.db import Connection
from core.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from core.pagination import InvalidCursor, decode_cursor, encode_cursor
from services.users.events import UserRegistered, UserRolesChanged
from services.users.metrics import UsersMetrics
from services.users.models import User
from services.users.repository import UsersRepository
from services.users.roles import permissions_of
from services.users.throttle import LoginThrottle

__all__ = [
    "AdminExists",
    "CurrentPasswordRequired",
    "EmailTaken",
    "InvalidCredentials",
    "Tokens",
    "UserNotFound",
    "UserPage",
    "UsersService",
    "WrongCurrentPassword",
]

log = logging.getLogger("services.users")

DEFAULT_ROLES = ("customer",)
ADMIN_ROLES = ("admin", "customer")


class EmailTaken(Conflict):
    """The email is already registered (emails compare case-insensitively)."""

    type: ClassVar[str] = "https://aioshop.dev/problems/email-taken"


class AdminExists(Conflict):
    """An account with the admin's email exists already and promoting it was not asked for."""


class InvalidCredentials(Unauthorized):
    """Wrong email or password; the same answer for both."""


class UserNotFound(NotFound):
    """No user with that id."""


class WrongCurrentPassword(Forbidden):
    """A password change named the wrong current password."""


class CurrentPasswordRequired(ValidationFailed):
    """A password change without the current password."""

    def __init__(self) -> None:
        super().__init__(
            [
                {
                    "loc": ["body", "current_password"],
                    "msg": "current_password is required to change the password",
                    "type": "missing",
                }
            ]
        )


@dataclass(frozen=True, slots=True)
class Tokens:
    """An issued access/refresh pair."""

    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class UserPage:
    """A page of users and the cursor of the next one."""

    items: list[User]
    next_cursor: str | None


class UsersService:
    """Accounts and sessions."""

    def __init__(
        self,
        repository: UsersRepository,
        *,
        hasher: PasswordHasher,
        codec: TokenCodec,
        revocations: RevocationStore,
        outbox: Outbox,
        throttle: LoginThrottle | None = None,
        metrics: UsersMetrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.repository = repository
        self.hasher = hasher
        self.codec = codec
        self.revocations = revocations
        self.outbox = outbox
        self.throttle = throttle

    async def register(self, *, email: str, password: str, full_name: str) -> User:
        """Create an account with the ``customer`` role; ``EmailTaken`` if the email is in use."""
        user = await self._create(
            email=email, password=password, full_name=full_name, roles=DEFAULT_ROLES
        )
        if user is None:
            raise EmailTaken("An account with this email already exists")
        if self.metrics is not None:  # after the commit: a rolled-back sign-up is no sign-up
            self.metrics.registered.inc()
        return user

    async def _create(
        self, *, email: str, password: str, full_name: str, roles: Sequence[str]
    ) -> User | None:
        """Insert a user and its ``user.registered`` event atomically; ``None`` if email taken."""
        password_hash = await self.hasher.hash(password)
        async with self.repository.transaction() as conn:
            user = await self.repository.insert_user(
                email=email,
                full_name=full_name,
                password_hash=password_hash,
                roles=roles,
                conn=conn,
            )
            if user is not None:
                await self.outbox.publish(conn, _registered(user))
        return user

    async def login(self, *, email: str, password: str, client: str = "unknown") -> Tokens:
        """Exchange credentials for a new session (a new refresh family).

        ``LoginThrottled`` (429) when the account has had too many recent attempts (from
        ``client``, the caller's address, or from everywhere): checked before the password, so a
        throttled guess learns nothing.
        """
        email = email.strip().lower()
        if self.throttle is not None:
            await self.throttle.attempt(email, client)
        user = await self.repository.get_by_email(email)
        valid = await self.hasher.verify(password, user.password_hash if user else None)
        if user is None or not valid:
            raise InvalidCredentials("The email or password is incorrect")
        if self.throttle is not None:
            await self.throttle.succeeded(email, client)
        family = uuid.uuid4()
        async with self.repository.transaction() as conn:
            # A password change committed since the check above wins: no session for the old one.
            if await self.repository.share_lock_password(user.id, conn) != user.password_hash:
                raise InvalidCredentials("The email or password is incorrect")
            await self.repository.insert_family(family, user.id, conn)
            return await self._issue(user, family=family, conn=conn)

    async def refresh(self, refresh_token: str) -> Tokens:
        """Rotate a refresh token. Presenting a used or revoked one revokes its whole family."""
        claims = self.codec.decode(refresh_token, typ="refresh")
        try:
            jti = uuid.UUID(str(claims["jti"]))
            family = uuid.UUID(str(claims["fam"]))
        except ValueError as exc:
            raise Unauthorized("The token is invalid") from exc
        reused = False
        async with self.repository.transaction() as conn:
            revoked = await self.repository.lock_family(family, conn)
            if revoked is None:
                raise Unauthorized("The token is invalid")
            if revoked:
                raise Unauthorized("The session has been revoked")
            record = await self.repository.lock_refresh(jti, conn)
            if record is None or record.family_id != family:
                raise Unauthorized("The token is invalid")
            if record.used_at is not None:
                reused = True
                await self.repository.revoke_family(family, conn)
            else:
                await self.repository.mark_refresh_used(jti, conn)
                user = await self.repository.get(record.user_id, conn)
                if user is None:
                    raise Unauthorized("The account no longer exists")
                tokens = await self._issue(user, family=family, conn=conn)
        if reused:
            # Committed first, so the family stays revoked whatever happens next.
            await self.revocations.revoke_family(str(family))
            raise Unauthorized("The refresh token was already used; the session is revoked")
        return tokens

    async def logout(self, principal: Principal) -> None:
        """End the caller's session: its access token and refresh family stop working at once."""
        # The database first: if it fails, the client sees an error and the session is intact,
        # never half ended with refresh tokens still working.
        await self.repository.revoke_family(uuid.UUID(principal.family))
        await self.revocations.revoke_family(principal.family)
        await self.revocations.revoke_token(principal.jti)

    async def get(self, user_id: str | uuid.UUID) -> User:
        """The user with this id, or ``UserNotFound``."""
        user = await self.repository.get(_as_uuid(user_id))
        if user is None:
            raise UserNotFound("No such user")
        return user

    async def update_profile(
        self,
        principal: Principal,
        *,
        full_name: str | None,
        password: str | None,
        current_password: str | None,
    ) -> User:
        """Change one's name and/or password. A new password ends every session of the user."""
        user = await self.get(principal.user_id)
        password_hash = None
        if password is not None:
            if current_password is None:
                raise CurrentPasswordRequired()
            if not await self.hasher.verify(current_password, user.password_hash):
                raise WrongCurrentPassword("The current password is incorrect")
            password_hash = await self.hasher.hash(password)
        if full_name is None and password_hash is None:
            return user
        async with self.repository.transaction() as conn:
            updated = await self.repository.update_profile(
                user.id, full_name=full_name, password_hash=password_hash, conn=conn
            )
            if updated is None:
                raise UserNotFound("No such user")
            if password_hash is not None:
                await self.repository.revoke_user_families(user.id, conn)
        if password_hash is not None:
            await self.revocations.revoke_user_tokens(str(user.id))
        return updated

    async def list_users(self, *, limit: int, cursor: str | None) -> UserPage:
        """A page of users, newest first."""
        after = None
        if cursor is not None:
            created_at, user_id = decode_cursor(cursor, 2)
            try:
                if not isinstance(created_at, str) or not isinstance(user_id, str):
                    raise TypeError("cursor values are strings")
                after = (datetime.fromisoformat(created_at).astimezone(UTC), uuid.UUID(user_id))
            except (TypeError, ValueError, OverflowError) as exc:
                raise InvalidCursor() from exc
        users = await self.repository.list_users(limit=limit + 1, after=after)
        next_cursor = None
        if len(users) > limit:
            users = users[:limit]
            last = users[-1]
            next_cursor = encode_cursor(last.created_at.isoformat(), str(last.id))
        return UserPage(items=users, next_cursor=next_cursor)

    async def set_roles(self, user_id: uuid.UUID, roles: list[str]) -> list[str]:
        """Replace a user's roles; their current access tokens stop working (they must refresh)."""
        unique = sorted(set(roles))
        async with self.repository.transaction() as conn:
            changed = await self.repository.set_roles(user_id, unique, conn)
            if changed is None:
                raise UserNotFound("No such user")
            previous, current = changed
            if sorted(previous) != current:
                await self.outbox.publish(
                    conn,
                    UserRolesChanged(user_id=user_id, roles=current, previous_roles=previous),
                )
        if sorted(previous) != current:
            await self.revocations.revoke_user_tokens(str(user_id))
        return current

    async def create_admin(
        self,
        *,
        email: str,
        password: str,
        full_name: str = "Administrator",
        promote_existing: bool = False,
    ) -> User:
        """Create an admin account; ``AdminExists`` if the email is taken.

        An existing account is never promoted on its email alone: whoever registered it chose
        its password. With ``promote_existing`` (an operator's explicit choice) it is granted
        ``admin`` and given ``password``, and every session it had ends.
        """
        email = email.strip().lower()
        created = await self._create(
            email=email, password=password, full_name=full_name, roles=ADMIN_ROLES
        )
        if created is not None:
            return created
        existing = await self.repository.get_by_email(email)
        if existing is None:  # deleted between the two statements
            raise UserNotFound("No such user")
        if not promote_existing:
            raise AdminExists(f"An account with the email {email} exists already")
        password_hash = await self.hasher.hash(password)
        async with self.repository.transaction() as conn:
            await self.repository.update_profile(
                existing.id, password_hash=password_hash, conn=conn
            )
            await self.repository.revoke_user_families(existing.id, conn)
        await self.revocations.revoke_user_tokens(str(existing.id))
        if "admin" not in existing.roles:
            await self.set_roles(existing.id, [*existing.roles, "admin"])
        return await self.get(existing.id)

    async def ensure_admin_at_startup(self, *, email: str, password: str) -> User | None:
        """``ADMIN_EMAIL``/``ADMIN_PASSWORD``: create that admin if no account has the email.

        An existing account is left as it is (an admin stays one; anyone else is not promoted):
        returns it, or ``None`` with an error logged when it is not an admin.
        """
        try:
            return await self.create_admin(email=email, password=password)
        except AdminExists:
            existing = await self.repository.get_by_email(email.strip().lower())
            if existing is not None and "admin" in existing.roles:
                return existing
            log.error(
                "ADMIN_EMAIL names an existing account that is not an admin: refusing to "
                "promote it (anyone may have registered that email). Promote it on purpose "
                "with `aioshop create-admin --promote-existing EMAIL`."
            )
            return None

    async def _issue(
        self, user: User, *, family: uuid.UUID, conn: Connection | None = None
    ) -> Tokens:
        access = self.codec.issue(
            "access",
            user_id=str(user.id),
            roles=user.roles,
            permissions=sorted(permissions_of(user.roles)),
            family=str(family),
        )
        refresh = self.codec.issue(
            "refresh", user_id=str(user.id), roles=user.roles, family=str(family)
        )
        await self.repository.insert_refresh(
            jti=uuid.UUID(refresh.jti),
            family_id=family,
            user_id=user.id,
            expires_at=datetime.fromtimestamp(refresh.expires_at, UTC),
            conn=conn,
        )
        return Tokens(
            access_token=access.token,
            refresh_token=refresh.token,
            expires_in=self.codec.access_ttl,
        )


def _registered(user: User) -> UserRegistered:
    return UserRegistered(
        user_id=user.id,
        email=user.email,
        full_name=user.full_name,
        roles=user.roles,
        created_at=user.created_at,
    )


def _as_uuid(value: str | uuid.UUID) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise UserNotFound("No such user") from exc

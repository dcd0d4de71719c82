"""Turns an ``Authorization: Bearer`` header into a verified, unrevoked ``Principal``."""

from __future__ import annotations

from collections.abc import Collection

from core.auth.revocation import RevocationStore
from core.auth.tokens import Principal, TokenCodec
from core.errors import Forbidden, Unauthorized

__all__ = ["Authenticator", "bearer_token"]


def bearer_token(authorization: str | None) -> str:
    """Extract the token from an ``Authorization`` header value or raise ``Unauthorized``."""
    if not authorization:
        raise Unauthorized("Authentication is required")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Use the Bearer authentication scheme")
    if not token.isascii():
        raise Unauthorized("The token is invalid")
    return token


class Authenticator:
    """Verifies access tokens and checks permissions."""

    def __init__(self, codec: TokenCodec, revocations: RevocationStore | None) -> None:
        self.codec = codec
        self.revocations = revocations

    async def authenticate(self, authorization: str | None) -> Principal:
        """Return the principal behind the header, or raise ``Unauthorized``."""
        principal = self.codec.principal(bearer_token(authorization))
        if self.revocations is not None:
            await self.revocations.ensure_active(principal)
        return principal

    @staticmethod
    def authorize(principal: Principal, permissions: Collection[str]) -> None:
        """Raise ``Forbidden`` unless the principal holds every one of ``permissions``."""
        missing = sorted(p for p in permissions if not principal.has_permission(p))
        if missing:
            raise Forbidden(f"This action requires the permission {', '.join(missing)}")

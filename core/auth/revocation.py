"""Token revocation in Redis: logout, refresh-token reuse and role changes take effect at once."""

from __future__ import annotations

import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.auth.tokens import Principal
from core.errors import ServiceUnavailable, Unauthorized

__all__ = ["RevocationStore"]


class RevocationStore:
    """Remembers revoked token families, token ids and per-user not-before times.

    Entries live as long as an access token can, so the store stays small. A revocation check that
    cannot reach Redis fails closed with 503: a logged-out token must not work because Redis
    blinked.
    """

    def __init__(self, redis: Redis, *, namespace: str, access_ttl: int) -> None:
        self._redis = redis
        self._ns = namespace
        self._ttl = access_ttl + 60

    def _family_key(self, family: str) -> str:
        return f"{self._ns}:auth:revoked:fam:{family}"

    def _jti_key(self, jti: str) -> str:
        return f"{self._ns}:auth:revoked:jti:{jti}"

    def _user_key(self, user_id: str) -> str:
        return f"{self._ns}:auth:nbf:user:{user_id}"

    async def revoke_family(self, family: str) -> None:
        """Every access token of this refresh family stops working."""
        await self._redis.set(self._family_key(family), b"1", ex=self._ttl)

    async def revoke_token(self, jti: str) -> None:
        """This one access token stops working."""
        await self._redis.set(self._jti_key(jti), b"1", ex=self._ttl)

    async def revoke_user_tokens(self, user_id: str, *, now: float | None = None) -> None:
        """Every access token of this user issued before now stops working."""
        stamp = time.time() if now is None else now
        await self._redis.set(self._user_key(user_id), repr(stamp).encode(), ex=self._ttl)

    async def ensure_active(self, principal: Principal) -> None:
        """Raise ``Unauthorized`` if the token was revoked, ``ServiceUnavailable`` if unknowable."""
        keys = (
            self._family_key(principal.family),
            self._jti_key(principal.jti),
            self._user_key(principal.user_id),
        )
        try:
            family, jti, not_before = await self._redis.mget(keys)
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(
                "Token revocation cannot be checked right now", headers={"Retry-After": "1"}
            ) from exc
        if family is not None or jti is not None:
            raise Unauthorized("The token has been revoked")
        if not_before is not None and principal.issued_at < float(not_before):
            raise Unauthorized("The token has been revoked")

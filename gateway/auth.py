"""Authentication at the edge: the JWT verified with the public key, revocations read in Redis.

No request costs a call to the users service. The verified identity travels upstream in
``X-Authenticated-User`` (the user id) and ``X-Authenticated-Roles`` (comma-separated). The
gateway strips every ``X-Authenticated-*`` header a client sends, so an upstream that is reachable
only through the gateway may trust them; with ``IDENTITY_SECRET`` set, the gateway also signs them
(``X-Authenticated-Signature``, HMAC-SHA256 over user, roles and ``X-Authenticated-At``) so an
upstream can check with ``verify_identity`` that they came from the gateway. The ``Authorization``
header is passed on unchanged: today's services verify the token themselves.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from core.auth import Principal, RevocationStore, TokenCodec, bearer_token
from core.errors import Unauthorized
from gateway.metrics import GatewayMetrics
from gateway.routing import RouteRule

__all__ = [
    "AT_HEADER",
    "ROLES_HEADER",
    "SIGNATURE_HEADER",
    "USER_HEADER",
    "EdgeAuth",
    "identity_headers",
    "verify_identity",
]

USER_HEADER = "X-Authenticated-User"
ROLES_HEADER = "X-Authenticated-Roles"
AT_HEADER = "X-Authenticated-At"
SIGNATURE_HEADER = "X-Authenticated-Signature"


def _signature(secret: bytes, user: str, roles: str, at: str) -> str:
    return hmac.new(secret, f"{user}\n{roles}\n{at}".encode(), hashlib.sha256).hexdigest()


def identity_headers(
    principal: Principal, *, secret: bytes | None, now: float | None = None
) -> dict[str, str]:
    """The identity headers for ``principal`` (signed when ``secret`` is given)."""
    roles = ",".join(sorted(principal.roles))
    headers = {USER_HEADER: principal.user_id, ROLES_HEADER: roles}
    if secret:
        at = str(int(time.time() if now is None else now))
        headers[AT_HEADER] = at
        headers[SIGNATURE_HEADER] = _signature(secret, principal.user_id, roles, at)
    return headers


def verify_identity(
    headers: Mapping[str, str], *, secret: bytes, max_age: float = 60.0, now: float | None = None
) -> tuple[str, frozenset[str]] | None:
    """For upstreams: the (user id, roles) the gateway vouches for, or ``None`` if unsigned,
    tampered or older than ``max_age`` seconds."""
    user, roles = headers.get(USER_HEADER), headers.get(ROLES_HEADER)
    at, signature = headers.get(AT_HEADER), headers.get(SIGNATURE_HEADER)
    if user is None or roles is None or at is None or signature is None:
        return None
    expected = _signature(secret, user, roles, at)
    if not hmac.compare_digest(expected, signature):
        return None
    try:
        age = (time.time() if now is None else now) - int(at)
    except ValueError:
        return None
    if not -5 <= age <= max_age:
        return None
    return user, frozenset(role for role in roles.split(",") if role)


class EdgeAuth:
    """Decides who a request is and whether its route lets it through."""

    def __init__(
        self,
        codec: TokenCodec,
        revocations: RevocationStore,
        *,
        public: RouteRule,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.codec = codec
        self.revocations = revocations
        self.public = public
        self.metrics = metrics

    def identify(self, authorization: str | None) -> tuple[Principal | None, Unauthorized | None]:
        """Verify the bearer token (signature, expiry, issuer, type; no I/O).

        Returns the principal, or the reason to refuse it (raised later, only on routes that
        need it: on a public route a bad token counts as no token).
        """
        if authorization is None:
            return None, None
        try:
            return self.codec.principal(bearer_token(authorization)), None
        except Unauthorized as exc:
            return None, exc

    async def ensure_active(self, principal: Principal) -> None:
        """Raise ``Unauthorized`` if revoked; ``ServiceUnavailable`` if Redis cannot tell."""
        await self.revocations.ensure_active(principal)

    def reject(self, error: Unauthorized | None) -> Unauthorized:
        """The 401 to raise (``None``: no credentials at all), counted by reason."""
        if error is None:
            error, reason = Unauthorized("Authentication is required"), "missing"
        elif "expired" in error.detail:
            reason = "expired"
        elif "revoked" in error.detail:
            reason = "revoked"
        else:
            reason = "invalid"
        if self.metrics is not None:
            self.metrics.auth_rejections.labels(reason).inc()
        return error

"""JWT access and refresh tokens (PyJWT) signed with an asymmetric key.

Services and the gateway verify with the public key alone; only the users service holds the
private key. Verification pins the algorithm, so ``alg: none`` and HMAC-with-the-public-key tokens
are refused.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_pem_public_key,
)

from core.errors import Unauthorized

__all__ = ["IssuedToken", "Principal", "TokenCodec"]

TokenType = Literal["access", "refresh"]

_PUBLIC_KEY_TYPES = (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey)
_PRIVATE_KEY_TYPES = (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller, as read from a verified access token."""

    user_id: str
    roles: frozenset[str]
    jti: str
    family: str
    issued_at: float
    expires_at: int
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    permissions: frozenset[str] = frozenset()

    def has_role(self, role: str) -> bool:
        """Whether the caller holds ``role`` (for display; authorize by permission)."""
        return role in self.roles

    def has_permission(self, permission: str) -> bool:
        """Whether the caller's token grants ``permission``."""
        return permission in self.permissions


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly signed token and the claims it carries."""

    token: str
    jti: str
    family: str
    expires_at: int


class TokenCodec:
    """Signs and verifies aioshop JWTs."""

    def __init__(
        self,
        *,
        public_key: str,
        private_key: str | None = None,
        algorithm: str = "EdDSA",
        issuer: str = "aioshop",
        access_ttl: int = 900,
        refresh_ttl: int = 14 * 86_400,
        leeway: int = 5,
        cache_size: int = 10_000,
    ) -> None:
        # Parsed once: PyJWT would otherwise parse the PEM on every verification.
        public = load_pem_public_key(public_key.encode())
        if not isinstance(public, _PUBLIC_KEY_TYPES):
            raise ValueError("JWT public key must be an Ed25519, EC or RSA key")
        self._public_key = public
        private = load_pem_private_key(private_key.encode(), password=None) if private_key else None
        if private is not None and not isinstance(private, _PRIVATE_KEY_TYPES):
            raise ValueError("JWT private key must be an Ed25519, EC or RSA key")
        self._private_key = private
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cache_size = cache_size
        self.algorithm = algorithm
        self.issuer = issuer
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.leeway = leeway

    def issue(
        self,
        typ: TokenType,
        *,
        user_id: str,
        roles: Sequence[str],
        family: str,
        permissions: Sequence[str] = (),
        now: float | None = None,
    ) -> IssuedToken:
        """Sign a token of type ``typ`` for ``user_id`` in refresh family ``family``.

        ``permissions`` travel in the ``perms`` claim: whoever issues the token (the users
        service) resolves roles to permissions, so verifiers need no role table.
        """
        if self._private_key is None:
            raise RuntimeError("this TokenCodec has no private key: it can only verify")
        # Sub-second ``iat`` (a NumericDate may be fractional, RFC 7519): revocations by time
        # (``RevocationStore.revoke_user_tokens``) must tell apart tokens of the same second.
        iat = time.time() if now is None else now
        ttl = self.access_ttl if typ == "access" else self.refresh_ttl
        jti = str(uuid.uuid4())
        claims = {
            "iss": self.issuer,
            "sub": user_id,
            "roles": sorted(roles),
            "perms": sorted(set(permissions)),
            "iat": iat,
            "exp": int(iat) + ttl,
            "jti": jti,
            "typ": typ,
            "fam": family,
        }
        token = jwt.encode(claims, self._private_key, algorithm=self.algorithm)
        return IssuedToken(token=token, jti=jti, family=family, expires_at=int(iat) + ttl)

    def decode(self, token: str, *, typ: TokenType) -> dict[str, Any]:
        """Verify signature, expiry, issuer and type; return the claims or raise 401.

        Access tokens already verified are remembered (keyed by the whole token, signature
        included, so a tampered token never matches) and only their expiry is checked again.
        """
        if typ == "access":
            cached = self._verified.get(token)
            if cached is not None:
                if cached["exp"] + self.leeway > time.time():
                    self._verified.move_to_end(token)
                    return cached
                del self._verified[token]
                raise Unauthorized("The token has expired")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._public_key,
                algorithms=[self.algorithm],
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "sub", "jti", "typ", "fam", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The token has expired") from exc
        except (jwt.PyJWTError, ValueError) as exc:  # ValueError: undecodable bytes in the token
            raise Unauthorized("The token is invalid") from exc
        if claims.get("typ") != typ:
            raise Unauthorized("The token is invalid")
        for claim in ("roles", "perms"):
            values = claims.get(claim, [])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise Unauthorized("The token is invalid")
        if typ == "access":
            self._verified[token] = claims
            if len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return claims

    def principal(self, token: str) -> Principal:
        """Verify an access token and return who it speaks for."""
        claims = self.decode(token, typ="access")
        return Principal(
            user_id=str(claims["sub"]),
            roles=frozenset(claims.get("roles", [])),
            jti=str(claims["jti"]),
            family=str(claims["fam"]),
            issued_at=float(claims["iat"]),
            expires_at=int(claims["exp"]),
            claims=claims,
            permissions=frozenset(claims.get("perms", [])),
        )

"""Authentication and authorization: JWTs, revocation, password hashing, the request principal."""

from core.auth.authenticator import Authenticator, bearer_token
from core.auth.passwords import PasswordHasher
from core.auth.revocation import RevocationStore
from core.auth.tokens import IssuedToken, Principal, TokenCodec

__all__ = [
    "Authenticator",
    "IssuedToken",
    "PasswordHasher",
    "Principal",
    "RevocationStore",
    "TokenCodec",
    "bearer_token",
]

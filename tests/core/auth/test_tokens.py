"""core.auth.tokens: signing and the refusals that matter."""

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core import Unauthorized, token_codec
from core.auth import TokenCodec
from core.settings import BaseServiceSettings

pytestmark = pytest.mark.unit


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _segments(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (
        json.loads(base64.urlsafe_b64decode(pad(header))),
        json.loads(base64.urlsafe_b64decode(pad(payload))),
        signature,
    )


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "aioshop",
        "sub": "u1",
        "roles": ["admin"],
        "iat": now,
        "exp": now + 600,
        "jti": "j1",
        "typ": "access",
        "fam": "f1",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture
def verifier(settings: BaseServiceSettings) -> TokenCodec:
    return token_codec(settings)


def test_round_trip(signer: TokenCodec, verifier: TokenCodec) -> None:
    now = int(time.time())
    issued = signer.issue(
        "access", user_id="user-1", roles=["customer", "admin"], family="fam-1", now=now
    )
    principal = verifier.principal(issued.token)
    assert principal.user_id == "user-1"
    assert principal.roles == frozenset({"admin", "customer"})
    assert principal.has_role("admin")
    assert not principal.has_role("root")
    assert principal.family == "fam-1" == issued.family
    assert principal.jti == issued.jti
    assert principal.issued_at == now
    assert principal.expires_at == now + verifier.access_ttl == issued.expires_at
    assert principal.claims["iss"] == "aioshop"
    assert principal.claims["typ"] == "access"
    header, _, _ = _segments(issued.token)
    assert header["alg"] == "EdDSA"


def test_each_token_has_its_own_id(signer: TokenCodec) -> None:
    a = signer.issue("access", user_id="u", roles=[], family="f")
    b = signer.issue("access", user_id="u", roles=[], family="f")
    assert a.jti != b.jti
    assert a.token != b.token


def test_a_refresh_token_round_trips_as_refresh(signer: TokenCodec, verifier: TokenCodec) -> None:
    now = int(time.time())
    issued = signer.issue("refresh", user_id="u1", roles=["customer"], family="f", now=now)
    claims = verifier.decode(issued.token, typ="refresh")
    assert claims["sub"] == "u1"
    assert claims["exp"] == now + verifier.refresh_ttl
    assert issued.expires_at == now + verifier.refresh_ttl


def test_a_refresh_token_is_not_an_access_token(signer: TokenCodec, verifier: TokenCodec) -> None:
    refresh = signer.issue("refresh", user_id="u1", roles=["customer"], family="f").token
    with pytest.raises(Unauthorized, match="invalid"):
        verifier.principal(refresh)
    access = signer.issue("access", user_id="u1", roles=["customer"], family="f").token
    with pytest.raises(Unauthorized, match="invalid"):
        verifier.decode(access, typ="refresh")


def test_an_expired_token_is_refused(signer: TokenCodec, verifier: TokenCodec) -> None:
    long_ago = int(time.time()) - signer.access_ttl - 60
    token = signer.issue("access", user_id="u1", roles=[], family="f", now=long_ago).token
    with pytest.raises(Unauthorized, match="expired") as info:
        verifier.principal(token)
    assert info.value.status == 401
    assert info.value.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_tampered_signature_is_refused(signer: TokenCodec, verifier: TokenCodec) -> None:
    token = signer.issue("access", user_id="u1", roles=["customer"], family="f").token
    head, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    tampered = f"{head}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"
    assert tampered != token
    with pytest.raises(Unauthorized, match="invalid"):
        verifier.principal(tampered)


def test_a_tampered_payload_is_refused(signer: TokenCodec, verifier: TokenCodec) -> None:
    token = signer.issue("access", user_id="u1", roles=["customer"], family="f").token
    head, _, signature = token.split(".")
    _, claims, _ = _segments(token)
    claims["roles"] = ["admin"]
    forged = f"{head}.{_b64(json.dumps(claims).encode())}.{signature}"
    with pytest.raises(Unauthorized, match="invalid"):
        verifier.principal(forged)


def test_alg_none_is_refused(verifier: TokenCodec) -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    for token in (f"{header}.{payload}.", f"{header}.{payload}"):
        with pytest.raises(Unauthorized, match="invalid"):
            verifier.principal(token)


def test_hs256_signed_with_the_public_key_is_refused(
    settings: BaseServiceSettings, verifier: TokenCodec
) -> None:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    signing_input = f"{header}.{payload}".encode()
    key = settings.jwt_public_key.encode()
    signature = _b64(hmac.new(key, signing_input, hashlib.sha256).digest())
    with pytest.raises(Unauthorized, match="invalid"):
        verifier.principal(f"{header}.{payload}.{signature}")


def test_a_token_signed_by_another_key_is_refused(verifier: TokenCodec) -> None:
    other = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    token = jwt.encode(_claims(), other, algorithm="EdDSA")
    with pytest.raises(Unauthorized, match="invalid"):
        verifier.principal(token)


def test_another_issuer_is_refused(settings: BaseServiceSettings, verifier: TokenCodec) -> None:
    private = settings.jwt_private_key
    assert private is not None
    token = jwt.encode(_claims(iss="someone-else"), private.get_secret_value(), algorithm="EdDSA")
    with pytest.raises(Unauthorized, match="invalid"):
        verifier.principal(token)


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "jti", "typ", "fam", "iss"])
def test_a_token_missing_a_claim_is_refused(
    settings: BaseServiceSettings, verifier: TokenCodec, missing: str
) -> None:
    private = settings.jwt_private_key
    assert private is not None
    claims = _claims()
    del claims[missing]
    token = jwt.encode(claims, private.get_secret_value(), algorithm="EdDSA")
    with pytest.raises(Unauthorized):
        verifier.principal(token)


@pytest.mark.parametrize("roles", ["admin", [1, 2], {"admin": True}])
def test_roles_must_be_a_list_of_strings(
    settings: BaseServiceSettings, verifier: TokenCodec, roles: Any
) -> None:
    private = settings.jwt_private_key
    assert private is not None
    token = jwt.encode(_claims(roles=roles), private.get_secret_value(), algorithm="EdDSA")
    with pytest.raises(Unauthorized, match="invalid"):
        verifier.principal(token)


def test_a_verify_only_codec_cannot_issue(settings: BaseServiceSettings) -> None:
    verify_only = token_codec(settings)
    assert settings.jwt_private_key is not None  # the settings do hold a private key
    with pytest.raises(RuntimeError, match="only verify"):
        verify_only.issue("access", user_id="u1", roles=[], family="f")
    bare = TokenCodec(public_key=settings.jwt_public_key)
    with pytest.raises(RuntimeError):
        bare.issue("refresh", user_id="u1", roles=[], family="f")


@pytest.mark.parametrize("garbage", ["", "a.b", "a.b.c", "😀.😀.😀", "x" * 5000])
def test_garbage_is_refused_as_invalid(verifier: TokenCodec, garbage: str) -> None:
    with pytest.raises(Unauthorized, match="invalid"):
        verifier.principal(garbage)

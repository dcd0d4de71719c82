"""Registration, login, refresh rotation, logout and token checks (API.md "Auth and users")."""

from __future__ import annotations

import hashlib
import hmac
import io
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.auth import TokenCodec
from core.auth.devkeys import DEV_PRIVATE_KEY, DEV_PUBLIC_KEY
from core.testing import assert_problem
from services.users import Settings
from tests.conftest import AccountFactory
from tests.services.users.conftest import Register
from tests.services.users.helpers import (
    LOGOUT,
    ME,
    TOKEN_FIELDS,
    USER_FIELDS,
    Client,
    all_users_state,
    assert_accepted,
    assert_rejected,
    assert_unauthorized,
    b64url,
    bearer,
    claims,
    login,
    login_tokens,
    refresh,
    refresh_rows,
    unique_email,
    user_by_email,
    user_state,
)

PASSWORD = "correct horse battery"


def registration(**overrides: Any) -> dict[str, Any]:
    """A valid registration body with a fresh email, with ``overrides`` applied."""
    return {"email": unique_email(), "password": PASSWORD, "full_name": "Ada Lovelace", **overrides}


def sized_registration(size: int) -> bytes:
    """A JSON registration body of exactly ``size`` bytes (padded in ``full_name``)."""
    body = registration(full_name="")
    padding = size - len(orjson.dumps(body))
    assert padding >= 0
    encoded = orjson.dumps({**body, "full_name": "x" * padding})
    assert len(encoded) == size
    return encoded


# Registration -------------------------------------------------------------------------------


async def test_register_returns_the_new_user_and_stores_the_email_lower_cased(
    register: Register, users_db: asyncpg.Connection
) -> None:
    email = f"Mixed.Case-{uuid.uuid4().hex[:12]}@Example.COM"
    resp = await register(registration(email=email))

    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert set(body) >= USER_FIELDS
    assert "password" not in body
    assert "password_hash" not in body
    assert body["email"] == email.lower()
    assert body["full_name"] == "Ada Lovelace"
    assert body["roles"] == ["customer"]
    created_at = datetime.fromisoformat(body["created_at"])
    assert created_at.utcoffset() == UTC.utcoffset(None)

    row = await user_by_email(users_db, email.lower())
    assert row is not None
    assert await user_by_email(users_db, email) is None
    assert str(row["id"]) == body["id"]
    assert row["created_at"] == created_at
    assert row["roles"] == ["customer"]
    assert row["password_hash"].startswith("$2")
    assert PASSWORD not in row["password_hash"]


async def test_register_refuses_an_email_taken_in_another_case(
    register: Register, users_db: asyncpg.Connection
) -> None:
    email = unique_email(prefix="Taken")
    first = await register(registration(email=email))
    assert first.status == 201
    before = await all_users_state(users_db)

    resp = await register(registration(email=email.upper(), full_name="Impostor"))

    await assert_problem(resp, 409)
    assert await all_users_state(users_db) == before


@pytest.mark.parametrize(
    "email",
    ["not-an-email", "missing-domain@", "@example.com", "two@@example.com", "spa ce@example.com"],
)
async def test_register_rejects_a_malformed_email(
    register: Register, users_db: asyncpg.Connection, email: str
) -> None:
    before = await all_users_state(users_db)

    resp = await register(registration(email=email))

    body = await assert_problem(resp, 422)
    assert [e["loc"] for e in body["errors"]] == [["body", "email"]]
    assert await all_users_state(users_db) == before


@pytest.mark.parametrize("length", [7, 129])
async def test_register_rejects_a_password_outside_8_to_128_characters(
    register: Register, users_db: asyncpg.Connection, length: int
) -> None:
    before = await all_users_state(users_db)
    password = "p" * length

    resp = await register(registration(password=password))

    body = await assert_problem(resp, 422)
    assert [e["loc"] for e in body["errors"]] == [["body", "password"]]
    assert password not in str(body)  # the input is never echoed
    assert await all_users_state(users_db) == before


@pytest.mark.parametrize("password", ["p" * 7 + "Z", "p" * 127 + "Z", "é" * 127 + "Z"])
async def test_register_accepts_passwords_of_8_and_128_characters_and_all_of_it_counts(
    register: Register, users_client: Client, password: str
) -> None:
    body = registration(password=password)

    resp = await register(body)

    assert resp.status == 201, await resp.text()
    assert (await login(users_client, body["email"], password)).status == 200
    # Only the last character differs: bcrypt alone would ignore it past 72 bytes.
    await assert_unauthorized(await login(users_client, body["email"], password[:-1] + "Y"))


@pytest.mark.parametrize("missing", ["email", "password", "full_name"])
async def test_register_rejects_a_missing_field(
    register: Register, users_db: asyncpg.Connection, missing: str
) -> None:
    before = await all_users_state(users_db)
    body = registration()
    del body[missing]

    resp = await register(body)

    problem = await assert_problem(resp, 422)
    assert [(e["loc"], e["type"]) for e in problem["errors"]] == [(["body", missing], "missing")]
    assert await all_users_state(users_db) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("full_name", 5),
        ("full_name", None),
        ("email", 5),
        ("email", ["someone@example.com"]),
        ("password", 12345678),
        ("password", True),
    ],
)
async def test_register_rejects_a_field_of_the_wrong_type(
    register: Register, users_db: asyncpg.Connection, field: str, value: Any
) -> None:
    before = await all_users_state(users_db)

    resp = await register(registration(**{field: value}))

    body = await assert_problem(resp, 422)
    assert [e["loc"] for e in body["errors"]] == [["body", field]]
    assert await all_users_state(users_db) == before


@pytest.mark.parametrize("payload", [[], "a string", 42, None])
async def test_register_rejects_a_body_that_is_not_an_object(
    register: Register, users_db: asyncpg.Connection, payload: Any
) -> None:
    before = await all_users_state(users_db)

    resp = await register(data=orjson.dumps(payload), headers={"Content-Type": "application/json"})

    body = await assert_problem(resp, 422)
    assert [e["loc"] for e in body["errors"]] == [["body"]]
    assert await all_users_state(users_db) == before


@pytest.mark.parametrize(
    ("field", "value"), [("roles", ["admin"]), ("is_admin", True), ("id", str(uuid.uuid4()))]
)
async def test_register_rejects_unknown_fields(
    register: Register, users_db: asyncpg.Connection, field: str, value: Any
) -> None:
    before = await all_users_state(users_db)

    resp = await register(registration(**{field: value}))

    body = await assert_problem(resp, 422)
    assert [(e["loc"], e["type"]) for e in body["errors"]] == [(["body", field], "extra_forbidden")]
    assert await all_users_state(users_db) == before


async def test_register_without_a_body_is_a_validation_error(
    register: Register, users_db: asyncpg.Connection
) -> None:
    before = await all_users_state(users_db)

    resp = await register()

    body = await assert_problem(resp, 422)
    assert [e["loc"] for e in body["errors"]] == [["body"]]
    assert await all_users_state(users_db) == before


async def test_register_refuses_a_body_over_the_limit(
    register: Register, users_db: asyncpg.Connection, users_settings: Settings
) -> None:
    before = await all_users_state(users_db)
    payload = sized_registration(users_settings.max_body_bytes + 1)

    resp = await register(data=io.BytesIO(payload), headers={"Content-Type": "application/json"})

    await assert_problem(resp, 413)
    assert await all_users_state(users_db) == before


async def test_register_refuses_a_chunked_body_over_the_limit(
    register: Register, users_db: asyncpg.Connection, users_settings: Settings
) -> None:
    """No Content-Length: the limit applies while the body is read."""
    before = await all_users_state(users_db)
    payload = sized_registration(users_settings.max_body_bytes + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 64 * 1024):
            yield payload[start : start + 64 * 1024]

    resp = await register(data=chunks(), headers={"Content-Type": "application/json"})

    await assert_problem(resp, 413)
    assert await all_users_state(users_db) == before


async def test_a_body_of_exactly_the_limit_is_read(
    register: Register, users_db: asyncpg.Connection, users_settings: Settings
) -> None:
    """The limit is inclusive: this body reaches validation (its full_name is too long)."""
    before = await all_users_state(users_db)
    payload = sized_registration(users_settings.max_body_bytes)

    resp = await register(data=io.BytesIO(payload), headers={"Content-Type": "application/json"})

    body = await assert_problem(resp, 422)
    assert [e["loc"] for e in body["errors"]] == [["body", "full_name"]]
    assert await all_users_state(users_db) == before


@pytest.mark.parametrize(
    "payload", [b"{not json", b'{"email": "a@example.com"', b"email=a%40example.com", b"\xff\xfe"]
)
async def test_register_refuses_a_body_that_is_not_json(
    register: Register, users_db: asyncpg.Connection, payload: bytes
) -> None:
    before = await all_users_state(users_db)

    resp = await register(data=payload, headers={"Content-Type": "application/json"})

    await assert_problem(resp, 400)
    assert await all_users_state(users_db) == before


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_register_refuses_a_body_that_is_not_declared_json(
    register: Register,
    users_db: asyncpg.Connection,
    forget_emails: set[str],
    content_type: str,
) -> None:
    before = await all_users_state(users_db)
    body = registration()
    forget_emails.add(body["email"])

    resp = await register(data=orjson.dumps(body), headers={"Content-Type": content_type})

    await assert_problem(resp, 415)
    assert await all_users_state(users_db) == before


# Login --------------------------------------------------------------------------------------


async def test_login_returns_a_bearer_token_pair(
    make_account: AccountFactory,
    users_client: Client,
    users_db: asyncpg.Connection,
    users_settings: Settings,
) -> None:
    account = await make_account()
    rows_before = await refresh_rows(users_db, account.id)

    # Emails compare case-insensitively at login too.
    resp = await login(users_client, account.email.upper(), account.password)

    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert set(body) >= TOKEN_FIELDS
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == users_settings.access_token_ttl
    access, refresh_ = claims(body["access_token"]), claims(body["refresh_token"])
    assert (access["typ"], refresh_["typ"]) == ("access", "refresh")
    assert access["sub"] == refresh_["sub"] == account.id
    assert access["fam"] == refresh_["fam"]
    assert abs(access["exp"] - access["iat"] - body["expires_in"]) < 1
    await assert_accepted(users_client, body["access_token"], account.id)

    rows_after = await refresh_rows(users_db, account.id)
    new_rows = [r for r in rows_after if r not in rows_before]
    assert [(str(r["jti"]), str(r["family_id"])) for r in new_rows] == [
        (refresh_["jti"], refresh_["fam"])
    ]


async def test_login_gives_the_same_401_for_a_wrong_password_and_an_unknown_email(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    account = await make_account()
    before = await all_users_state(users_db)

    wrong_password = await login(users_client, account.email, account.password + "!")
    unknown_email = await login(users_client, unique_email(), account.password)

    first = await assert_unauthorized(wrong_password)
    second = await assert_unauthorized(unknown_email)
    same = ("type", "title", "status", "detail")
    assert {k: first[k] for k in same} == {k: second[k] for k in same}
    assert await all_users_state(users_db) == before


# Refresh ------------------------------------------------------------------------------------


async def test_refresh_rotates_the_pair(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    account = await make_account()

    resp = await refresh(users_client, account.refresh_token)

    assert resp.status == 200, await resp.text()
    pair = await resp.json()
    assert set(pair) >= TOKEN_FIELDS
    assert pair["token_type"] == "bearer"
    assert pair["refresh_token"] != account.refresh_token
    assert claims(pair["refresh_token"])["fam"] == claims(account.refresh_token)["fam"]
    await assert_accepted(users_client, pair["access_token"], account.id)
    # The new refresh token works in turn.
    newest = await refresh(users_client, pair["refresh_token"])
    assert newest.status == 200, await newest.text()

    before = await refresh_rows(users_db, account.id)
    await assert_unauthorized(await refresh(users_client, account.refresh_token))
    after = await refresh_rows(users_db, account.id)
    assert [r["jti"] for r in after] == [r["jti"] for r in before]  # nothing issued
    assert [r["used_at"] for r in after] == [r["used_at"] for r in before]


async def test_a_reused_refresh_token_revokes_its_whole_family(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    account = await make_account()
    other_session = await login_tokens(users_client, account.email, account.password)
    first = await (await refresh(users_client, account.refresh_token)).json()
    second = await (await refresh(users_client, first["refresh_token"])).json()
    before = await refresh_rows(users_db, account.id)

    await assert_unauthorized(await refresh(users_client, first["refresh_token"]))

    # The newest tokens of the family, and every access token of it, are dead too.
    await assert_unauthorized(await refresh(users_client, second["refresh_token"]))
    for access_token in (second["access_token"], first["access_token"], account.access_token):
        await assert_rejected(users_client, access_token)
    # Another session of the same user is not affected.
    await assert_accepted(users_client, other_session["access_token"], account.id)

    after = await refresh_rows(users_db, account.id)
    assert [r["jti"] for r in after] == [r["jti"] for r in before]  # nothing issued
    family = uuid.UUID(claims(account.refresh_token)["fam"])
    assert all(r["revoked_at"] is not None for r in after if r["family_id"] == family)
    assert all(r["revoked_at"] is None for r in after if r["family_id"] != family)
    refreshed = await refresh(users_client, other_session["refresh_token"])
    assert refreshed.status == 200, await refreshed.text()


# Logout -------------------------------------------------------------------------------------


async def test_logout_ends_the_session_at_once(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    account = await make_account()
    other_session = await login_tokens(users_client, account.email, account.password)
    # A second access token of the same session (same refresh family).
    current = await (await refresh(users_client, account.refresh_token)).json()

    resp = await users_client.post(LOGOUT, headers=bearer(current["access_token"]))

    assert resp.status == 204, await resp.text()
    assert await resp.read() == b""
    await assert_rejected(users_client, current["access_token"])
    await assert_rejected(users_client, account.access_token)
    await assert_unauthorized(await refresh(users_client, current["refresh_token"]))
    family = uuid.UUID(claims(account.refresh_token)["fam"])
    rows = await refresh_rows(users_db, account.id)
    assert all(r["revoked_at"] is not None for r in rows if r["family_id"] == family)
    assert all(r["revoked_at"] is None for r in rows if r["family_id"] != family)
    await assert_accepted(users_client, other_session["access_token"], account.id)


async def test_logout_needs_a_token(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    account = await make_account()
    before = await user_state(users_db, account.id)

    await assert_unauthorized(await users_client.post(LOGOUT))

    assert await user_state(users_db, account.id) == before
    await assert_accepted(users_client, account.access_token, account.id)


# Token verification -------------------------------------------------------------------------


def resign(token: str, settings: Settings, **changes: Any) -> str:
    """The claims of a genuine ``token`` with ``changes``, signed with the service's (dev) key."""
    payload = {**claims(token), **changes}
    return jwt.encode(payload, DEV_PRIVATE_KEY, algorithm=settings.jwt_algorithm)


def garbage(token: str, settings: Settings) -> str:
    return "not.a.jwt"


def expired(token: str, settings: Settings) -> str:
    now = int(time.time())
    return resign(token, settings, iat=now - 7200, exp=now - 3600)


def without_expiry(token: str, settings: Settings) -> str:
    return jwt.encode(
        {k: v for k, v in claims(token).items() if k != "exp"},
        DEV_PRIVATE_KEY,
        algorithm=settings.jwt_algorithm,
    )


def another_issuer(token: str, settings: Settings) -> str:
    return resign(token, settings, iss="not-aioshop")


def other_type(token: str, settings: Settings) -> str:
    return resign(token, settings, typ="refresh" if claims(token)["typ"] == "access" else "access")


def tampered(token: str, settings: Settings) -> str:
    header, payload, signature = token.split(".")
    middle = len(payload) // 2
    flipped = "A" if payload[middle] != "A" else "B"
    return ".".join([header, payload[:middle] + flipped + payload[middle + 1 :], signature])


def self_promoted(token: str, settings: Settings) -> str:
    """The genuine token with ``admin`` added to its payload, the signature kept."""
    header, _, signature = token.split(".")
    payload = {**claims(token), "roles": ["admin", "customer"]}
    return ".".join([header, b64url(orjson.dumps(payload)), signature])


def alg_none(token: str, settings: Settings) -> str:
    header = b64url(orjson.dumps({"alg": "none", "typ": "JWT"}))
    return f"{header}.{b64url(orjson.dumps(claims(token)))}."


def hs256_with_public_key(token: str, settings: Settings) -> str:
    """The key-confusion attack: an HMAC keyed with the (public) verification key."""
    header = b64url(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    signing_input = f"{header}.{b64url(orjson.dumps(claims(token)))}"
    mac = hmac.new(DEV_PUBLIC_KEY.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def signed_by_another_key(token: str, settings: Settings) -> str:
    key = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return jwt.encode(claims(token), key, algorithm="EdDSA")


BAD_TOKENS: dict[str, Callable[[str, Settings], str]] = {
    "garbage": garbage,
    "expired": expired,
    "without_expiry": without_expiry,
    "another_issuer": another_issuer,
    "other_type": other_type,
    "tampered": tampered,
    "self_promoted": self_promoted,
    "alg_none": alg_none,
    "hs256_with_public_key": hs256_with_public_key,
    "signed_by_another_key": signed_by_another_key,
}
bad_tokens = pytest.mark.parametrize("make_token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())


async def test_genuine_claims_signed_with_the_dev_key_are_accepted(
    make_account: AccountFactory, users_client: Client, users_settings: Settings
) -> None:
    """Control for the cases below: each bad token differs from these in one defect only."""
    account = await make_account()

    await assert_accepted(users_client, resign(account.access_token, users_settings), account.id)
    resp = await refresh(users_client, resign(account.refresh_token, users_settings))
    assert resp.status == 200, await resp.text()


@bad_tokens
async def test_a_bad_access_token_is_401(
    make_account: AccountFactory,
    users_client: Client,
    users_db: asyncpg.Connection,
    users_settings: Settings,
    make_token: Callable[[str, Settings], str],
) -> None:
    account = await make_account()
    before = await user_state(users_db, account.id)
    token = make_token(account.access_token, users_settings)

    resp = await users_client.patch(ME, json={"full_name": "Mallory"}, headers=bearer(token))

    await assert_unauthorized(resp)
    assert await user_state(users_db, account.id) == before


@bad_tokens
async def test_a_bad_refresh_token_is_401(
    make_account: AccountFactory,
    users_client: Client,
    users_db: asyncpg.Connection,
    users_settings: Settings,
    make_token: Callable[[str, Settings], str],
) -> None:
    account = await make_account()
    before = await user_state(users_db, account.id)
    token = make_token(account.refresh_token, users_settings)

    await assert_unauthorized(await refresh(users_client, token))

    assert await user_state(users_db, account.id) == before
    # The genuine refresh token was not touched by the attempt.
    assert (await refresh(users_client, account.refresh_token)).status == 200


async def test_an_access_token_expired_per_the_token_codec_is_401(
    make_account: AccountFactory,
    users_client: Client,
    users_db: asyncpg.Connection,
    users_settings: Settings,
) -> None:
    account = await make_account()
    codec = TokenCodec(
        public_key=DEV_PUBLIC_KEY,
        private_key=DEV_PRIVATE_KEY,
        algorithm=users_settings.jwt_algorithm,
        issuer=users_settings.jwt_issuer,
        access_ttl=users_settings.access_token_ttl,
    )
    session = claims(account.access_token)
    now = int(time.time())

    def issued_at(when: int) -> str:
        return codec.issue(
            "access", user_id=account.id, roles=account.roles, family=session["fam"], now=when
        ).token

    await assert_accepted(users_client, issued_at(now), account.id)  # control
    before = await user_state(users_db, account.id)
    stale = issued_at(now - users_settings.access_token_ttl - 60)

    resp = await users_client.patch(ME, json={"full_name": "Mallory"}, headers=bearer(stale))

    await assert_unauthorized(resp)
    assert await user_state(users_db, account.id) == before


async def test_a_refresh_token_is_not_an_access_token(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    account = await make_account()
    before = await user_state(users_db, account.id)

    resp = await users_client.patch(
        ME, json={"full_name": "Mallory"}, headers=bearer(account.refresh_token)
    )

    await assert_unauthorized(resp)
    assert await user_state(users_db, account.id) == before


async def test_an_access_token_is_not_a_refresh_token(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    account = await make_account()
    before = await user_state(users_db, account.id)

    await assert_unauthorized(await refresh(users_client, account.access_token))

    assert await user_state(users_db, account.id) == before


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer    ", "Basic dXNlcjpwYXNzd29yZA==", "Token {token}", "{token}"],
    ids=["absent", "empty", "no-token", "blank-token", "basic", "other-scheme", "no-scheme"],
)
async def test_a_request_without_a_bearer_token_is_401_with_a_challenge(
    make_account: AccountFactory,
    users_client: Client,
    users_db: asyncpg.Connection,
    authorization: str | None,
) -> None:
    account = await make_account()
    before = await user_state(users_db, account.id)
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization.format(token=account.access_token)

    resp = await users_client.patch(ME, json={"full_name": "Mallory"}, headers=headers)

    await assert_unauthorized(resp)
    assert await user_state(users_db, account.id) == before

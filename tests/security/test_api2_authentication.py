"""API2 (broken authentication): forged, expired, tampered, revoked and reused tokens, and the
development key against a process configured with keys of its own.

Every forged token claims the ``admin`` role and every permission, so that accepting it would
show: the request it authorizes must come back 401.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import jwt
import pytest

from core.auth.devkeys import DEV_PRIVATE_KEY, DEV_PUBLIC_KEY
from core.auth.tokens import TokenCodec
from core.testing import assert_problem, free_port
from services.users.roles import PERMISSIONS
from tests.gateway.conftest import ROOT, ServiceProcess
from tests.security.conftest import Session, System, spawn

ME = "/api/v1/users/me"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(user_id: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "aioshop",
        "sub": user_id,
        "roles": ["admin", "customer"],
        "perms": sorted(PERMISSIONS),
        "iat": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        "typ": "access",
        "fam": str(uuid.uuid4()),
    }
    claims.update(changes)
    return claims


def _unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _hs256_with_public_key(claims: dict[str, Any]) -> str:
    """The key-confusion attack: HMAC-signed with the (public) verification key as secret."""
    signing_input = (
        _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        + "."
        + _b64(json.dumps(claims).encode())
    )
    signature = hmac.new(DEV_PUBLIC_KEY.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _dev_signed(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, DEV_PRIVATE_KEY, algorithm="EdDSA")


async def _rejected(http: aiohttp.ClientSession, token: str, path: str = ME) -> None:
    async with http.get(path, headers={"Authorization": f"Bearer {token}"}) as response:
        await assert_problem(response, 401)


async def test_a_genuine_token_is_accepted(session: Session) -> None:
    """The control: the forgeries below differ from this only where they are forged."""
    user = await session.user()
    async with session.http.get(ME, headers=user.headers) as response:
        assert response.status == 200


async def test_alg_none_is_refused(session: Session) -> None:
    user = await session.user()
    for alg in ("none", "None", "NONE", "nOnE"):
        await _rejected(session.http, _unsigned(_claims(user.id), alg))
    # Even with the genuine token's signature left on.
    _, payload, signature = user.access_token.split(".")
    none = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    await _rejected(session.http, f"{none}.{payload}.{signature}")


async def test_hs256_signed_with_the_public_key_is_refused(session: Session) -> None:
    user = await session.user()
    await _rejected(session.http, _hs256_with_public_key(_claims(user.id)))
    await _rejected(session.http, _hs256_with_public_key(_claims(user.id)), "/api/v1/users")


async def test_expired_wrong_issuer_and_wrong_type_are_refused(session: Session) -> None:
    user = await session.user()
    past = int(time.time()) - 3600
    await _rejected(session.http, _dev_signed(_claims(user.id, iat=past - 600, exp=past)))
    await _rejected(session.http, _dev_signed(_claims(user.id, iss="someone-else")))
    await _rejected(session.http, _dev_signed(_claims(user.id, typ="refresh")))
    await _rejected(session.http, user.refresh_token)  # a refresh token is no access token
    incomplete = _claims(user.id)
    del incomplete["exp"]
    await _rejected(session.http, _dev_signed(incomplete))


async def test_a_tampered_payload_is_refused(session: Session) -> None:
    user = await session.user()
    header, payload, signature = user.access_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"], claims["perms"] = ["admin"], sorted(PERMISSIONS)
    forged = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    await _rejected(session.http, forged)
    await _rejected(session.http, forged, "/api/v1/users")
    # One flipped signature byte.
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    await _rejected(session.http, f"{header}.{payload}.{flipped}")


async def test_logout_revokes_the_access_token_and_its_refresh_family(session: Session) -> None:
    user = await session.user()
    async with session.http.post("/api/v1/auth/logout", headers=user.headers) as response:
        assert response.status == 204
    await _rejected(session.http, user.access_token)
    await _rejected(session.http, user.access_token, "/api/v1/orders")
    body = {"refresh_token": user.refresh_token}
    async with session.http.post("/api/v1/auth/refresh", json=body) as response:
        await assert_problem(response, 401)


async def test_refresh_reuse_revokes_the_whole_family(session: Session) -> None:
    user = await session.user()
    async with session.http.post(
        "/api/v1/auth/refresh", json={"refresh_token": user.refresh_token}
    ) as response:
        assert response.status == 200, await response.text()
        assert "no-store" in response.headers.get("Cache-Control", "")
        pair = await response.json()
    async with session.http.get(
        ME, headers={"Authorization": f"Bearer {pair['access_token']}"}
    ) as response:
        assert response.status == 200
    async with session.http.post(
        "/api/v1/auth/refresh", json={"refresh_token": user.refresh_token}
    ) as response:
        await assert_problem(response, 401)  # the reuse ...
    await _rejected(session.http, pair["access_token"])  # ... ends the newer session too
    async with session.http.post(
        "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    ) as response:
        await assert_problem(response, 401)


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Bearer ",
        "Bearer garbage",
        "Bearer a.b.c",
        "Bearer ..",
        "Bearer " + "A" * 12_000,
        "Bearer eyJhbGciOiJFZERTQSJ9.%%%.%%%",
        "Basic dXNlcjpwYXNz",
        "bearer" + " x" * 50,
        "Token abc",
    ],
    ids=lambda value: value[:20] or "empty",
)
async def test_missing_or_garbage_authorization(
    http: aiohttp.ClientSession, system: System, authorization: str
) -> None:
    async with http.get(ME, headers={"Authorization": authorization}) as response:
        assert response.status in (400, 401, 431), await response.text()
        if response.status == 401:
            await assert_problem(response, 401)
    async with http.get(ME) as response:
        await assert_problem(response, 401)
    system.assert_alive()


@pytest.fixture(scope="module")
def keyed_products(
    system: System, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceProcess, str]]:
    """A products process configured with a fresh key pair from ``aioshop keygen`` (its
    private key returned, to sign a genuine token with)."""
    printed = subprocess.run(
        [sys.executable, "-m", "services.cli", "keygen"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    keys = dict(re.findall(r'^(JWT_[A-Z_]+)="(.*?)"$', printed, flags=re.MULTILINE | re.DOTALL))
    assert set(keys) == {"JWT_PRIVATE_KEY", "JWT_PUBLIC_KEY"}, printed
    assert keys["JWT_PUBLIC_KEY"].strip() != DEV_PUBLIC_KEY.strip()
    port = free_port()
    env = {
        "AIOSHOP_ENV": "test",
        "BUS_TRANSPORT": "memory",
        "PRODUCTS_DATABASE_URL": system.products_dsn,
        "REDIS_NAMESPACE": system.redis_namespace,
        "LOG_LEVEL": "WARNING",
        **keys,
    }
    cmd = [sys.executable, "-m", "services.cli", "serve", "products", "--port", str(port)]
    for process in spawn("keyed-products", cmd, env, tmp_path_factory, port=port):
        yield process, keys["JWT_PRIVATE_KEY"]


async def test_the_development_key_is_refused_by_a_process_with_its_own_keys(
    keyed_products: tuple[ServiceProcess, str],
) -> None:
    process, private_key = keyed_products
    user_id = str(uuid.uuid4())
    body = {"sku": f"SEC-{uuid.uuid4().hex[:10]}", "name": "keyed", "price_cents": 1}
    dev = _dev_signed(_claims(user_id))
    own = TokenCodec(public_key=DEV_PUBLIC_KEY, private_key=private_key).issue(
        "access",
        user_id=user_id,
        roles=["admin"],
        permissions=sorted(PERMISSIONS),
        family=str(uuid.uuid4()),
    )
    async with aiohttp.ClientSession(base_url=process.url) as http:
        async with http.post(
            "/api/v1/products", json=body, headers={"Authorization": f"Bearer {dev}"}
        ) as response:
            await assert_problem(response, 401)
        async with http.post(
            "/api/v1/products", json=body, headers={"Authorization": f"Bearer {own.token}"}
        ) as response:
            assert response.status == 201, await response.text()  # its own key works

"""Handlers with authentication: permissions and the injected principal (revocation in Redis)."""

from typing import Any

from aiohttp import web

import core
from core import Principal, Router
from core.auth import TokenCodec
from core.settings import BaseServiceSettings
from core.testing import assert_problem
from tests.core.conftest import ClientFactory
from tests.core.test_handlers import _app_client


async def test_permissions_are_enforced_not_roles(
    service_client: ClientFactory, settings: BaseServiceSettings, signer: TokenCodec
) -> None:
    router = Router()

    @router.get("/stock", permissions={"inventory:write", "catalog:write"})
    async def stock_only() -> dict[str, bool]:
        return {"ok": True}

    client = await _app_client(service_client, settings, router, auth=True)

    def bearer(roles: list[str], permissions: list[str]) -> dict[str, str]:
        token = signer.issue(
            "access", user_id="u1", roles=roles, permissions=permissions, family="f1"
        ).token
        return {"Authorization": f"Bearer {token}"}

    # A role name alone grants nothing: only the token's permissions count.
    resp = await client.get("/stock", headers=bearer(["admin"], []))
    problem = await assert_problem(resp, 403)
    assert "catalog:write" in problem["detail"]
    assert "WWW-Authenticate" not in resp.headers
    # Every listed permission is required.
    await assert_problem(await client.get("/stock", headers=bearer([], ["inventory:write"])), 403)

    resp = await client.get("/stock", headers=bearer([], ["catalog:write", "inventory:write"]))
    assert resp.status == 200
    assert await resp.json() == {"ok": True}

    # permissions= implies auth=True
    await assert_problem(await client.get("/stock"), 401)


async def test_the_principal_is_injected(
    service_client: ClientFactory, settings: BaseServiceSettings, signer: TokenCodec
) -> None:
    router = Router()

    @router.get("/me", auth=True)
    async def me(caller: Principal, request: web.Request) -> dict[str, Any]:
        assert request[core.PRINCIPAL] is caller
        return {
            "user_id": caller.user_id,
            "roles": sorted(caller.roles),
            "family": caller.family,
            "jti": caller.jti,
        }

    client = await _app_client(service_client, settings, router, auth=True)
    issued = signer.issue("access", user_id="user-42", roles=["customer"], family="fam-1")
    resp = await client.get("/me", headers={"Authorization": f"Bearer {issued.token}"})
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "user_id": "user-42",
        "roles": ["customer"],
        "family": "fam-1",
        "jti": issued.jti,
    }

"""Input normalization seen through the users service (a real database)."""

from __future__ import annotations

from tests.conftest import AccountFactory, Client


async def test_a_password_is_normalized_at_register_login_and_change(
    users_client: Client, make_account: AccountFactory
) -> None:
    account = await make_account(password="pa\u0073\u0073 Cafe\u0301 word")
    login = {"email": account.email, "password": "pass Caf\u00e9 word"}
    assert (await users_client.post("/api/v1/auth/login", json=login)).status == 200
    change = await users_client.patch(
        "/api/v1/users/me",
        json={"current_password": "pass Caf\u00e9 word", "password": "new Cafe\u0301 word"},
        headers=account.headers,
    )
    assert change.status == 200, await change.text()
    login["password"] = "new Caf\u00e9 word"
    assert (await users_client.post("/api/v1/auth/login", json=login)).status == 200
    login["password"] = "new Caf\u00e9\x07word"
    refused = await users_client.post("/api/v1/auth/login", json=login)
    assert refused.status == 422
    assert (await refused.json())["errors"][0]["loc"] == ["body", "password"]

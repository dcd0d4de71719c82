async def test_register_login_me(make_account, users_client):
    account = await make_account()
    resp = await users_client.get("/api/v1/users/me", headers=account.headers)
    assert resp.status == 200
    assert (await resp.json())["email"] == account.email

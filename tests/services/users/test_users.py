"""Profiles, the admin's user list and roles (API.md "Auth and users")."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest

from core.testing import assert_problem
from tests.conftest import Account, AccountFactory
from tests.services.users.conftest import Register
from tests.services.users.helpers import (
    ME,
    USER_FIELDS,
    USERS,
    Client,
    all_users_state,
    assert_accepted,
    assert_rejected,
    assert_unauthorized,
    bearer,
    claims,
    login,
    login_tokens,
    refresh,
    refresh_rows,
    roles_path,
    unique_email,
    user_by_email,
    user_by_id,
    user_state,
)

NEW_PASSWORD = "a whole new passphrase"


def cursor_of(*values: Any) -> str:
    """A well-formed cursor holding ``values`` (but not one the API issued)."""
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode("ascii").rstrip("=")


async def list_all(client: Client, admin: Account, *, limit: int) -> list[list[dict[str, Any]]]:
    """Every page of GET /users, following next_cursor to the end."""
    pages: list[list[dict[str, Any]]] = []
    params: dict[str, str | int] = {"limit": limit}
    while True:
        resp = await client.get(USERS, params=params, headers=admin.headers)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        pages.append(body["items"])
        if body["next_cursor"] is None:
            return pages
        params = {"limit": limit, "cursor": body["next_cursor"]}


# The caller's own profile -------------------------------------------------------------------


async def test_me_is_the_callers_profile(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    account = await make_account()

    resp = await users_client.get(ME, headers=account.headers)

    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert set(body) >= USER_FIELDS
    assert "password_hash" not in body
    row = await user_by_id(users_db, account.id)
    assert (body["id"], body["email"], body["full_name"], body["roles"]) == (
        str(row["id"]),
        row["email"],
        row["full_name"],
        row["roles"],
    )


async def test_patch_me_changes_the_full_name_only(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    account = await make_account()
    before = await user_by_id(users_db, account.id)

    resp = await users_client.patch(ME, json={"full_name": "Grace Hopper"}, headers=account.headers)

    assert resp.status == 200, await resp.text()
    assert (await resp.json())["full_name"] == "Grace Hopper"
    after = await user_by_id(users_db, account.id)
    assert after["full_name"] == "Grace Hopper"
    assert after["updated_at"] > before["updated_at"]
    unchanged = ("id", "email", "password_hash", "roles", "created_at")
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}
    # A new name does not end the session.
    me = await users_client.get(ME, headers=account.headers)
    assert (await me.json())["full_name"] == "Grace Hopper"


async def test_a_password_change_needs_the_current_password(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    account = await make_account()
    before = await user_state(users_db, account.id)

    resp = await users_client.patch(
        ME, json={"password": NEW_PASSWORD, "full_name": "Changed"}, headers=account.headers
    )

    body = await assert_problem(resp, 422)
    assert [e["loc"] for e in body["errors"]] == [["body", "current_password"]]
    assert await user_state(users_db, account.id) == before
    await assert_accepted(users_client, account.access_token, account.id)


async def test_a_password_change_with_a_wrong_current_password_is_403(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    account = await make_account()
    before = await user_state(users_db, account.id)

    resp = await users_client.patch(
        ME,
        json={"password": NEW_PASSWORD, "current_password": account.password + "?"},
        headers=account.headers,
    )

    body = await assert_problem(resp, 403)
    assert NEW_PASSWORD not in str(body)
    assert await user_state(users_db, account.id) == before
    await assert_accepted(users_client, account.access_token, account.id)


async def test_a_password_change_ends_every_session(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    account = await make_account()
    other_session = await login_tokens(users_client, account.email, account.password)
    before = await user_by_id(users_db, account.id)

    resp = await users_client.patch(
        ME,
        json={"password": NEW_PASSWORD, "current_password": account.password},
        headers=account.headers,
    )

    assert resp.status == 200, await resp.text()
    after = await user_by_id(users_db, account.id)
    assert after["password_hash"] != before["password_hash"]
    assert all(r["revoked_at"] is not None for r in await refresh_rows(users_db, account.id))
    for refresh_token in (account.refresh_token, other_session["refresh_token"]):
        await assert_unauthorized(await refresh(users_client, refresh_token))
    await assert_unauthorized(await login(users_client, account.email, account.password))

    tokens = await login_tokens(users_client, account.email, NEW_PASSWORD)
    await assert_accepted(users_client, tokens["access_token"], account.id)


@pytest.mark.parametrize(
    "patch",
    [
        {"password": "7 chars", "current_password": "correct horse battery"},
        {"password": "p" * 129, "current_password": "correct horse battery"},
        {"full_name": ""},
        {"full_name": 5},
        {"roles": ["admin"]},
        {"email": "someone-else@example.com"},
    ],
    ids=["short-password", "long-password", "empty-name", "number-name", "roles", "email"],
)
async def test_patch_me_rejects_invalid_changes(
    make_account: AccountFactory,
    users_client: Client,
    users_db: asyncpg.Connection,
    patch: dict[str, Any],
) -> None:
    account = await make_account()
    # The cases name the factory's default password, so only the new value is wrong.
    assert patch.get("current_password", account.password) == account.password
    before = await user_state(users_db, account.id)

    resp = await users_client.patch(ME, json=patch, headers=account.headers)

    body = await assert_problem(resp, 422)
    assert [e["loc"][:2] for e in body["errors"]] == [["body", next(iter(patch))]]
    assert await user_state(users_db, account.id) == before


# Listing users ------------------------------------------------------------------------------


async def test_pages_of_users_hold_each_user_once_newest_first(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    admin = await make_account(admin=True)
    created = [await make_account() for _ in range(5)]

    pages = await list_all(users_client, admin, limit=2)

    assert all(len(page) == 2 for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= 2
    listed = [item["id"] for page in pages for item in page]
    assert len(listed) == len(set(listed))
    stored = await users_db.fetch("SELECT id FROM users ORDER BY created_at DESC, id DESC")
    assert listed == [str(row["id"]) for row in stored]
    mine = [account.id for account in created]
    assert [user_id for user_id in listed if user_id in mine] == mine[::-1]
    first = pages[0][0]
    assert set(first) >= USER_FIELDS
    assert "password_hash" not in first


async def test_a_page_holds_20_users_by_default(
    make_account: AccountFactory, register: Register, users_client: Client
) -> None:
    admin = await make_account(admin=True)
    for _ in range(20):
        resp = await register(
            {"email": unique_email(), "password": "long enough", "full_name": "Filler"}
        )
        assert resp.status == 201

    resp = await users_client.get(USERS, headers=admin.headers)

    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert len(body["items"]) == 20
    assert body["next_cursor"] is not None


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten", ""])
async def test_a_limit_outside_1_to_100_is_422(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection, limit: str
) -> None:
    admin = await make_account(admin=True)
    before = await all_users_state(users_db)

    resp = await users_client.get(USERS, params={"limit": limit}, headers=admin.headers)

    body = await assert_problem(resp, 422)
    assert [e["loc"] for e in body["errors"]] == [["query", "limit"]]
    assert await all_users_state(users_db) == before


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "%%%",
        "x" * 600,
        cursor_of("only one value"),
        cursor_of("not a date", str(uuid.uuid4())),
        cursor_of("2026-01-01T00:00:00+00:00", "not a uuid"),
        cursor_of("2026-01-01T00:00:00+00:00", 5),
        cursor_of(5, str(uuid.uuid4())),
        cursor_of("9999-12-31T23:59:59-23:59", str(uuid.uuid4())),
    ],
    ids=[
        "garbage",
        "percent-signs",
        "too-long",
        "one-value",
        "not-a-date",
        "not-a-uuid",
        "number-for-uuid",
        "number-for-date",
        "date-out-of-range",
    ],
)
async def test_a_cursor_the_api_did_not_issue_is_422(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection, cursor: str
) -> None:
    admin = await make_account(admin=True)
    before = await all_users_state(users_db)

    resp = await users_client.get(USERS, params={"cursor": cursor}, headers=admin.headers)

    body = await assert_problem(resp, 422)
    assert [e["loc"] for e in body["errors"]] == [["query", "cursor"]]
    assert await all_users_state(users_db) == before


async def test_a_customer_cannot_list_users(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    customer = await make_account()
    before = await all_users_state(users_db)

    await assert_problem(await users_client.get(USERS, headers=customer.headers), 403)

    assert await all_users_state(users_db) == before


# Roles --------------------------------------------------------------------------------------


async def test_an_admin_replaces_a_users_roles(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    admin = await make_account(admin=True)
    user = await make_account()

    resp = await users_client.put(
        roles_path(user.id), json={"roles": ["customer", "admin", "admin"]}, headers=admin.headers
    )

    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert sorted(body["roles"]) == ["admin", "customer"]
    assert sorted((await user_by_id(users_db, user.id))["roles"]) == ["admin", "customer"]


@pytest.mark.parametrize(
    "own", [True, False], ids=["promoting-themselves", "demoting-someone-else"]
)
async def test_a_customer_cannot_change_roles(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection, own: bool
) -> None:
    customer = await make_account()
    target = customer if own else await make_account(admin=True)
    before = await all_users_state(users_db)

    resp = await users_client.put(
        roles_path(target.id),
        json={"roles": ["admin"] if own else ["customer"]},
        headers=customer.headers,
    )

    await assert_problem(resp, 403)
    assert await all_users_state(users_db) == before


@pytest.mark.parametrize(
    "body",
    [
        {"roles": ["superuser"]},
        {"roles": ["customer", "root"]},
        {"roles": []},
        {"roles": "admin"},
        {},
    ],
    ids=["unknown-role", "one-unknown-role", "no-roles", "not-a-list", "missing"],
)
async def test_invalid_roles_are_422(
    make_account: AccountFactory,
    users_client: Client,
    users_db: asyncpg.Connection,
    body: dict[str, Any],
) -> None:
    admin = await make_account(admin=True)
    user = await make_account()
    before = await all_users_state(users_db)

    resp = await users_client.put(roles_path(user.id), json=body, headers=admin.headers)

    problem = await assert_problem(resp, 422)
    assert all(e["loc"][:2] == ["body", "roles"] for e in problem["errors"]), problem
    assert await all_users_state(users_db) == before


async def test_roles_of_an_unknown_user_are_404(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    admin = await make_account(admin=True)
    before = await all_users_state(users_db)

    resp = await users_client.put(
        roles_path(str(uuid.uuid4())), json={"roles": ["admin"]}, headers=admin.headers
    )

    await assert_problem(resp, 404)
    assert await all_users_state(users_db) == before


@pytest.mark.parametrize(
    "user_id", ["not-a-uuid", "1", "' OR '1'='1"], ids=["word", "number", "sql-shaped"]
)
async def test_roles_of_a_non_uuid_id_are_422(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection, user_id: str
) -> None:
    admin = await make_account(admin=True)
    before = await all_users_state(users_db)

    resp = await users_client.put(
        roles_path(user_id), json={"roles": ["admin"]}, headers=admin.headers
    )

    body = await assert_problem(resp, 422)
    assert [e["loc"] for e in body["errors"]] == [["path", "user_id"]]
    assert await all_users_state(users_db) == before


async def test_a_refreshed_token_carries_the_new_roles(
    make_account: AccountFactory, users_client: Client
) -> None:
    admin = await make_account(admin=True)
    user = await make_account()
    await assert_problem(await users_client.get(USERS, headers=user.headers), 403)
    resp = await users_client.put(
        roles_path(user.id), json={"roles": ["admin"]}, headers=admin.headers
    )
    assert resp.status == 200, await resp.text()

    resp = await refresh(users_client, user.refresh_token)

    assert resp.status == 200, await resp.text()
    access_token = (await resp.json())["access_token"]
    assert claims(access_token)["roles"] == ["admin"]
    listing = await users_client.get(USERS, headers=bearer(access_token))
    assert listing.status == 200, await listing.text()


async def test_a_demoted_admin_loses_access_after_refresh(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    admin = await make_account(admin=True)
    demoted = await make_account(admin=True)
    resp = await users_client.put(
        roles_path(demoted.id), json={"roles": ["customer"]}, headers=admin.headers
    )
    assert resp.status == 200, await resp.text()
    refreshed = await refresh(users_client, demoted.refresh_token)
    access_token = (await refreshed.json())["access_token"]
    before = await all_users_state(users_db)

    resp = await users_client.put(
        roles_path(demoted.id), json={"roles": ["admin"]}, headers=bearer(access_token)
    )

    await assert_problem(resp, 403)
    assert await all_users_state(users_db) == before


# Old access tokens after a change of password or roles ----------------------------------------

Change = Callable[[Client, Account, Account], Awaitable[None]]


async def change_password(client: Client, account: Account, admin: Account) -> None:
    resp = await client.patch(
        ME,
        json={"password": NEW_PASSWORD, "current_password": account.password},
        headers=account.headers,
    )
    assert resp.status == 200, await resp.text()


async def promote(client: Client, account: Account, admin: Account) -> None:
    resp = await client.put(
        roles_path(account.id), json={"roles": ["admin"]}, headers=admin.headers
    )
    assert resp.status == 200, await resp.text()


async def demote(client: Client, account: Account, admin: Account) -> None:
    resp = await client.put(
        roles_path(account.id), json={"roles": ["customer"]}, headers=admin.headers
    )
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize(
    ("make_admin", "change"),
    [(False, change_password), (False, promote), (True, demote)],
    ids=["password-change", "promotion", "demotion"],
)
async def test_the_old_access_token_is_401_after(
    make_account: AccountFactory,
    users_client: Client,
    users_db: asyncpg.Connection,
    make_admin: bool,
    change: Change,
) -> None:
    admin = await make_account(admin=True)
    account = await make_account(admin=make_admin)
    await assert_accepted(users_client, account.access_token, account.id)
    await change(users_client, account, admin)
    before = await user_state(users_db, account.id)

    resp = await users_client.patch(ME, json={"full_name": "Stale"}, headers=account.headers)

    await assert_unauthorized(resp)
    assert await user_state(users_db, account.id) == before
    await assert_rejected(users_client, account.access_token)


# Injection-shaped input ---------------------------------------------------------------------


async def test_sql_shaped_input_is_stored_verbatim_and_harmless(
    register: Register, users_client: Client, users_db: asyncpg.Connection
) -> None:
    email = f"o'brien-{uuid.uuid4().hex[:12]}@example.com"
    full_name = "Robert'); DROP TABLE users;--"
    others_before = await all_users_state(users_db)

    resp = await register({"email": email, "password": "long enough", "full_name": full_name})

    assert resp.status == 201, await resp.text()
    assert (await resp.json())["full_name"] == full_name
    row = await user_by_email(users_db, email)
    assert row is not None
    assert (row["email"], row["full_name"]) == (email, full_name)
    for table in ("users", "refresh_tokens"):
        assert await users_db.fetchval("SELECT to_regclass($1)", table) is not None
    assert [r for r in await all_users_state(users_db) if r.get("id") != row["id"]] == others_before

    tokens = await login_tokens(users_client, email, "long enough")
    renamed = "x' OR '1'='1"
    resp = await users_client.patch(
        ME, json={"full_name": renamed}, headers=bearer(tokens["access_token"])
    )
    assert resp.status == 200, await resp.text()
    me = await (await users_client.get(ME, headers=bearer(tokens["access_token"]))).json()
    assert (me["email"], me["full_name"]) == (email, renamed)
    others = await users_db.fetchval(
        "SELECT count(*) FROM users WHERE full_name = $1 AND id <> $2", renamed, row["id"]
    )
    assert others == 0


@pytest.mark.parametrize(
    "email",
    ["' OR '1'='1", "x' OR 1=1;--@example.com", "admin'--"],
    ids=["or-true", "email-shaped", "comment"],
)
async def test_sql_shaped_credentials_do_not_log_in(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection, email: str
) -> None:
    await make_account()  # at least one user exists that a bad query could match
    before = await all_users_state(users_db)

    await assert_unauthorized(await login(users_client, email, "' OR '1'='1"))

    assert await all_users_state(users_db) == before

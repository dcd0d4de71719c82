"""Races and the event loop: what holds when many requests arrive at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from core.auth import PasswordHasher
from core.testing import assert_problem, wait_for
from services.users import Settings, create_users_app
from services.users.keys import USERS_SERVICE
from tests.conftest import AccountFactory
from tests.services.users.conftest import Register
from tests.services.users.helpers import (
    REGISTER,
    Client,
    claims,
    login,
    unique_email,
    user_by_email,
    users_count,
)

PASSWORD = "correct horse battery"


async def test_simultaneous_registrations_of_one_email_create_one_user(
    register: Register, users_db: asyncpg.Connection
) -> None:
    email = unique_email(prefix="race")
    count = await users_count(users_db)

    responses = await asyncio.gather(
        *(
            register({"email": email, "password": PASSWORD, "full_name": f"Racer {n}"})
            for n in range(50)
        )
    )

    created = [resp for resp in responses if resp.status == 201]
    assert len(created) == 1, sorted(resp.status for resp in responses)
    for resp in responses:
        if resp is not created[0]:
            await assert_problem(resp, 409)
    winner = await created[0].json()
    assert await users_db.fetchval("SELECT count(*) FROM users WHERE email = $1", email) == 1
    assert await users_count(users_db) == count + 1
    row = await user_by_email(users_db, email)
    assert row is not None
    assert (str(row["id"]), row["full_name"]) == (winner["id"], winner["full_name"])


class VerifySpy:
    """Wraps ``PasswordHasher.verify`` and records when a verification starts and ends."""

    def __init__(self, hasher: PasswordHasher) -> None:
        self._verify = hasher.verify
        self.started = asyncio.Event()
        self.finished = asyncio.Event()

    async def __call__(self, password: str, hashed: str | None) -> bool:
        self.started.set()
        try:
            return await self._verify(password, hashed)
        finally:
            self.finished.set()


@pytest.mark.slow
async def test_bcrypt_does_not_block_the_event_loop(
    service_client: Callable[[Any], Awaitable[Client]],
    users_settings: Settings,
    forget_emails: set[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Cost 13: one verification takes long enough that a blocked loop could not answer meanwhile.
    slow = users_settings.model_copy(update={"bcrypt_rounds": 13})
    client = await service_client(create_users_app(slow))
    email = unique_email(prefix="slow")
    forget_emails.add(email)
    resp = await client.post(
        REGISTER, json={"email": email, "password": PASSWORD, "full_name": "Slow"}
    )
    assert resp.status == 201, await resp.text()
    hasher = client.app[USERS_SERVICE].hasher
    assert hasher.rounds == 13
    spy = VerifySpy(hasher)
    monkeypatch.setattr(hasher, "verify", spy)

    login_task = asyncio.create_task(login(client, email, PASSWORD))
    async with asyncio.timeout(30):
        await spy.started.wait()  # the server is now inside bcrypt for this login

    health = await client.get("/healthz")

    assert health.status == 200
    # The loop answered while the verification was still running.
    assert not spy.finished.is_set()
    assert not login_task.done()
    resp = await login_task
    assert resp.status == 200, await resp.text()
    assert spy.finished.is_set()


async def test_a_revocation_racing_a_rotation_cannot_miss_the_new_token(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    """A rotation in flight holds its family's lock; a revocation waits for it, then covers the
    token the rotation issued (revoking token rows one by one would miss it)."""
    service = users_client.app[USERS_SERVICE]
    account = await make_account()
    family = uuid.UUID(claims(account.refresh_token)["fam"])
    user = await service.get(account.id)

    async with service.repository.transaction() as rotation:
        assert await service.repository.lock_family(family, rotation) is False
        issued = await service._issue(user, family=family, conn=rotation)
        revocation = asyncio.create_task(service.repository.revoke_family(family))

        async def revocation_waits_for_the_lock() -> bool:
            waiting: int = await users_db.fetchval(
                """
                SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE '%UPDATE refresh_families%'
                """
            )
            return waiting == 1

        await wait_for(revocation_waits_for_the_lock, within=5)
        assert not revocation.done()
    await revocation

    response = await users_client.post(
        "/api/v1/auth/refresh", json={"refresh_token": issued.refresh_token}
    )
    await assert_problem(response, 401)

"""Fixtures of the users service tests (on top of tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientResponse

from tests.services.users.helpers import REGISTER, Client

Register = Callable[..., Awaitable[ClientResponse]]


@pytest.fixture
async def forget_emails(users_db: asyncpg.Connection) -> AsyncIterator[set[str]]:
    """A set to add emails to: the users holding them are deleted after the test."""
    emails: set[str] = set()
    yield emails
    if emails:
        await users_db.execute(
            "DELETE FROM users WHERE email = ANY($1::text[])", [e.strip().lower() for e in emails]
        )


@pytest.fixture
def register(users_client: Client, forget_emails: set[str]) -> Register:
    """POST a registration with any body (``json=``, or raw ``data=`` with ``headers=``).

    Every email sent as JSON is deleted afterwards, whatever the answer was, so that tests of
    invalid input stay independent too.
    """

    async def post(json: Any = None, **kwargs: Any) -> ClientResponse:
        if isinstance(json, dict) and isinstance(json.get("email"), str):
            forget_emails.add(json["email"])
        if json is not None:
            kwargs["json"] = json
        return await users_client.post(REGISTER, **kwargs)

    return post

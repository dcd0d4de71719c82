"""``users_registered_total``: a registration counts once it has committed; a refused one
(the email is taken) does not."""

from __future__ import annotations

import uuid

from prometheus_client.parser import text_string_to_metric_families

from tests.services.products.helpers import Client
from tests.services.users.conftest import Register


async def _registered(client: Client) -> float:
    text = await (await client.get("/metrics")).text()
    (value,) = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "users_registered_total"
    ]
    return value


async def test_a_registration_counts_and_a_refused_one_does_not(
    users_client: Client, register: Register
) -> None:
    assert await _registered(users_client) == 0
    body = {
        "email": f"metrics-{uuid.uuid4().hex[:8]}@example.com",
        "password": "correct horse battery",
        "full_name": "Ada",
    }
    assert (await register(json=body)).status == 201
    assert await _registered(users_client) == 1
    assert (await register(json=body)).status == 409  # taken: rolled back, not counted
    assert await _registered(users_client) == 1

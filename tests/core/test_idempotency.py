"""core.idempotency through a real app and Redis: what a replay gives back."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from aiohttp import web

import core
from core import Body, Router
from core.handlers import json_response
from core.schemas import InputModel
from core.settings import BaseServiceSettings
from tests.core.conftest import REDIS_URL, ClientFactory


class Thing(InputModel):
    name: str


async def test_a_replay_gives_the_first_status_body_and_headers(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()
    made: list[str] = []

    @router.post("/things", status=201, idempotent=True)
    async def create(thing: Annotated[Thing, Body()]) -> web.Response:
        thing_id = str(uuid.uuid4())
        made.append(thing_id)
        headers = {"Location": f"/things/{thing_id}", "ETag": f'"{len(made)}"'}
        return json_response(b'{"id": "%s"}' % thing_id.encode(), 201, headers)

    app = core.create_app("t", settings, routers=[router], resources=[core.redis_ctx(REDIS_URL)])
    client = await service_client(app)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await client.post("/things", json={"name": "a"}, headers=key)
    second = await client.post(
        "/things", json={"name": "a"}, headers={**key, "X-Correlation-ID": "the-second"}
    )
    assert first.status == second.status == 201
    assert len(made) == 1
    body: dict[str, Any] = await first.json()
    assert await second.json() == body
    assert second.headers["Location"] == first.headers["Location"] == f"/things/{body['id']}"
    assert second.headers["ETag"] == '"1"'
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["X-Correlation-ID"] == "the-second"  # the replay's own request
    assert second.headers.getall("Content-Type") == first.headers.getall("Content-Type")

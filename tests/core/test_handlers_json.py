"""core.handlers: a handler returning ``JsonBody`` sends its bytes as they are."""

from __future__ import annotations

from typing import Annotated

import pytest

import core
from core import Path, Router
from core.handlers import JsonBody
from core.schemas import OutputModel
from core.settings import BaseServiceSettings
from tests.core.conftest import ClientFactory

pytestmark = pytest.mark.unit


class ItemOut(OutputModel):
    id: int
    name: str


async def test_a_json_body_is_sent_as_it_is_with_the_route_status(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/items/{item_id}", response=ItemOut)
    async def get_item(item_id: Annotated[int, Path()]) -> JsonBody:
        # not what ItemOut would write: proof that it is neither validated nor encoded again
        return JsonBody(b'{"name":"mug","id":%d}' % item_id)

    @router.post("/items/{item_id}", status=201, response=ItemOut)
    async def put_item(item_id: Annotated[int, Path()]) -> JsonBody:
        return JsonBody(b'{"id":%d,"name":"mug"}' % item_id)

    app = core.create_app("t", settings, routers=[router])
    client = await service_client(app)

    resp = await client.get("/items/7")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.read() == b'{"name":"mug","id":7}'
    assert resp.headers["Cache-Control"] == "no-store"

    resp = await client.post("/items/8")
    assert resp.status == 201
    assert await resp.read() == b'{"id":8,"name":"mug"}'

    resp = await client.get("/items/x")
    assert resp.status == 422

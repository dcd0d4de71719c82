"""core.pagination: opaque keyset cursors."""

import base64
import re
from typing import Annotated, Any

import orjson
import pytest

import core
from core import Query, Router, ValidationFailed
from core.pagination import InvalidCursor, decode_cursor, encode_cursor
from core.settings import BaseServiceSettings
from core.testing import assert_problem
from tests.core.conftest import ClientFactory

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "values",
    [
        ("2026-01-01T00:00:00+00:00", "6f1c2f4e-0d7b-4d2e-9a57-5d1f6e2f2c3a"),
        (1299, "b"),
        (None,),
        ("ünïcödé ✓", -1, 2.5, True),
        ("needs?padding",),
    ],
)
def test_round_trip(values: tuple[Any, ...]) -> None:
    cursor = encode_cursor(*values)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor), cursor  # URL-safe, no padding
    assert decode_cursor(cursor, len(values)) == list(values)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


@pytest.mark.parametrize(
    ("cursor", "size"),
    [
        pytest.param("", 1, id="empty"),
        pytest.param("!!!!", 1, id="not-base64"),
        pytest.param("%%%", 1, id="percent"),
        pytest.param("é", 1, id="non-ascii"),
        pytest.param("a", 1, id="truncated"),
        pytest.param(_b64(b"\xff\xfe\xfd"), 1, id="not-utf8"),
        pytest.param(_b64(b"not json"), 1, id="not-json"),
        pytest.param(_b64(orjson.dumps({"id": 1})), 1, id="object"),
        pytest.param(_b64(orjson.dumps("x")), 1, id="string"),
        pytest.param(encode_cursor(1, 2), 3, id="too-few"),
        pytest.param(encode_cursor(1, 2, 3), 2, id="too-many"),
    ],
)
def test_invalid_cursors(cursor: str, size: int) -> None:
    with pytest.raises(InvalidCursor) as info:
        decode_cursor(cursor, size)
    assert isinstance(info.value, ValidationFailed)
    assert info.value.status == 422
    assert info.value.errors == [
        {"loc": ["query", "cursor"], "msg": "The cursor is not valid", "type": "cursor_invalid"}
    ]


async def test_an_invalid_cursor_is_a_422_on_query_cursor(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/items")
    async def items(cursor: Annotated[str | None, Query()] = None) -> dict[str, Any]:
        after = decode_cursor(cursor, 2) if cursor else None
        return {"after": after, "next_cursor": encode_cursor("2026-01-01", 7)}

    client = await service_client(core.create_app("t", settings, routers=[router]))
    first = await (await client.get("/items")).json()
    assert first["after"] is None
    resp = await client.get("/items", params={"cursor": first["next_cursor"]})
    assert (await resp.json())["after"] == ["2026-01-01", 7]

    resp = await client.get("/items", params={"cursor": "garbage!"})
    body = await assert_problem(resp, 422)
    assert body["errors"] == [
        {"loc": ["query", "cursor"], "msg": "The cursor is not valid", "type": "cursor_invalid"}
    ]
    assert "garbage" not in await resp.text()

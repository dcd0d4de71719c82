"""core.middleware.access_log: one structured record per request, by route template."""

import logging
from typing import Annotated, Any

import pytest
from aiohttp import web

import core
from core import NotFound, Path, Router
from core.settings import BaseServiceSettings
from tests.core.conftest import ClientFactory

pytestmark = pytest.mark.unit


@pytest.fixture
async def client(service_client: ClientFactory, settings: BaseServiceSettings) -> Any:
    router = Router()

    @router.get("/items/{id}")
    async def get_item(id: Annotated[int, Path()]) -> dict[str, int]:
        if id == 0:
            raise NotFound("No such item")
        return {"id": id}

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    return await service_client(core.create_app("t", settings, routers=[router]))


def _access(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "core.access"]


async def test_one_record_per_request_with_its_fields(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="core.access"):
        resp = await client.get("/items/42", headers={"X-Correlation-ID": "log-1"})
        assert resp.status == 200
    records = _access(caplog)
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.INFO
    assert record.method == "GET"  # type: ignore[attr-defined]
    assert record.path == "/items/{id}"  # type: ignore[attr-defined]
    assert record.status == 200  # type: ignore[attr-defined]
    assert record.correlation_id == "log-1"  # type: ignore[attr-defined]
    duration = record.duration_ms  # type: ignore[attr-defined]
    assert isinstance(duration, float)
    assert 0 <= duration < 10_000
    assert "/items/42" not in record.getMessage()
    assert record.getMessage() == "GET /items/{id} 200"


async def test_error_statuses_and_unmatched_paths(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="core.access"):
        assert (await client.get("/items/0")).status == 404
        assert (await client.get("/items/nope")).status == 422
        assert (await client.get("/boom")).status == 500
        assert (await client.get("/no/such/path/123")).status == 404
        assert (await client.post("/items/1")).status == 405
    seen = [
        (r.method, r.path, r.status)  # type: ignore[attr-defined]
        for r in _access(caplog)
    ]
    assert seen == [
        ("GET", "/items/{id}", 404),
        ("GET", "/items/{id}", 422),
        ("GET", "/boom", 500),
        ("GET", "<unmatched>", 404),
        ("POST", "<unmatched>", 405),
    ]
    correlation_ids = [r.correlation_id for r in _access(caplog)]  # type: ignore[attr-defined]
    assert all(correlation_ids)
    assert len(set(correlation_ids)) == 5


async def test_a_raised_redirect_is_logged_with_its_own_status(
    service_client: ClientFactory, settings: BaseServiceSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """``raise web.HTTPFound(...)`` is aiohttp's idiom for a redirect: it is not a 500."""
    router = Router()

    @router.get("/old")
    async def old() -> None:
        raise web.HTTPFound("/new")

    client = await service_client(core.create_app("t", settings, routers=[router]))
    with caplog.at_level(logging.INFO, logger="core.access"):
        resp = await client.get("/old", allow_redirects=False)
        assert resp.status == 302
    assert [(r.path, r.status) for r in _access(caplog)] == [("/old", 302)]  # type: ignore[attr-defined]

"""The access log keeps probes (health, readiness, metrics) at DEBUG: an idle system is quiet."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import core
from core import Router
from core.middleware.access_log import PROBE_PATHS
from core.settings import BaseServiceSettings
from tests.core.conftest import ClientFactory


@pytest.fixture
async def client(service_client: ClientFactory, settings: BaseServiceSettings) -> Any:
    router = Router()

    @router.get("/things")
    async def things() -> dict[str, int]:
        return {"count": 0}

    return await service_client(core.create_app("t", settings, routers=[router]))


async def test_probes_are_debug_and_everything_else_info(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    assert {"/healthz", "/readyz", "/metrics"} == PROBE_PATHS
    with caplog.at_level(logging.DEBUG, logger="core.access"):
        for path in sorted(PROBE_PATHS):
            assert (await client.get(path)).status == 200, path
        assert (await client.get("/things")).status == 200
        assert (await client.get("/healthz/nope")).status == 404  # not a probe: as today
    levels = {
        record.path: record.levelno  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == "core.access"
    }
    assert levels == {
        "/healthz": logging.DEBUG,
        "/readyz": logging.DEBUG,
        "/metrics": logging.DEBUG,
        "/things": logging.INFO,
        "<unmatched>": logging.INFO,
    }


async def test_at_info_a_probe_leaves_no_line(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="core.access"):
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/things")).status == 200
    paths = [r.path for r in caplog.records if r.name == "core.access"]  # type: ignore[attr-defined]
    assert paths == ["/things"]


async def test_a_failing_readiness_probe_is_logged_at_info(
    service_client: ClientFactory, settings: BaseServiceSettings, caplog: pytest.LogCaptureFixture
) -> None:
    app = core.create_app("t", settings)

    async def down() -> None:
        raise ConnectionError("the database is away")

    app[core.HEALTH].add("database", down)
    client = await service_client(app)
    with caplog.at_level(logging.INFO, logger="core.access"):
        assert (await client.get("/readyz")).status == 503
        assert (await client.get("/healthz")).status == 200
    logged = [(r.path, r.levelno) for r in caplog.records if r.name == "core.access"]  # type: ignore[attr-defined]
    assert logged == [("/readyz", logging.INFO)]

"""The gateway's active health checks warn when an instance that was up goes down, not while
the instances are still starting (``aioshop up`` starts the dashboard beside the gateway)."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from aiohttp import web

from core.testing import free_port
from gateway.balancer import BreakerConfig, Pool
from gateway.health import HealthChecker
from gateway.retry import RetryBudget


async def _ready(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "gateway.health" and r.levelno == level
    ]


async def test_not_up_yet_is_no_warning_and_a_fall_after_being_up_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens there yet: the instance is starting
    pool = Pool(
        "web",
        [f"http://127.0.0.1:{port}"],
        config=BreakerConfig(unhealthy_threshold=1),
        budget=RetryBudget(ratio=0.2, min_per_second=1),
    )
    app = web.Application()
    app.router.add_get("/readyz", _ready)
    runner = web.AppRunner(app)
    await runner.setup()
    async with aiohttp.ClientSession() as session:
        checker = HealthChecker([pool], session, path="/readyz", interval=60, timeout=2)
        with caplog.at_level(logging.DEBUG, logger="gateway.health"):
            await checker.check_all()
            await checker.check_all()
            assert not pool.healthy
            assert _messages(caplog, logging.WARNING) == []
            assert _messages(caplog, logging.DEBUG) == ["instance web-0 is not up yet"]

            try:
                await web.TCPSite(runner, "127.0.0.1", port).start()
                await checker.check_all()
                assert pool.healthy
                assert _messages(caplog, logging.INFO) == ["instance web-0 is up"]
                assert _messages(caplog, logging.WARNING) == []
            finally:
                await runner.cleanup()

            await checker.check_all()  # it was up: now its fall is news
            assert not pool.healthy
            assert _messages(caplog, logging.WARNING) == ["instance web-0 is down"]

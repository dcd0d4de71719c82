"""``aioshop up --monitoring`` end to end, where Prometheus and Alertmanager are installed (where
``CI`` is set, their absence fails the test instead of skipping it): an isolated system (its
own databases, Redis namespace, exchange, queues and ports, Prometheus and Alertmanager on free
ports) is scraped, every instance ``up``; an instance that stops answering raises
``InstanceDown`` on the dashboard, and resolves once it answers again. Short intervals and
``for:`` through the monitoring settings, not by editing the shipped rules."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import migrations
from core.testing import free_port, wait_for
from services import registry
from services.control import running_supervisor
from services.monitoring import binaries
from tests.deploy.test_prometheus import missing_tools
from tests.services.launch import isolated_environment
from tests.services.test_up_healing import _token

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def monitoring_binaries() -> None:
    """Skip (fail where ``CI`` is set) when Prometheus or Alertmanager is not installed."""
    if None in binaries():
        missing_tools("prometheus or prometheus-alertmanager")


@pytest.fixture(scope="session")
def monitoring_dsns(
    monitoring_binaries: None, throwaway_database: Callable[[str, Path], str]
) -> dict[str, str]:
    return {
        name: throwaway_database(f"mon_{name}", migrations.location(name))
        for name in registry.SERVICES
    }


class System:
    def __init__(self, process: subprocess.Popen[bytes], data_dir: Path, log: Path) -> None:
        self.process = process
        self.data_dir = data_dir
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def instances(self) -> dict[str, dict[str, Any]]:
        state = running_supervisor(self.data_dir)
        assert state is not None, self.output()
        return {p["name"]: p for p in state["processes"]}


@pytest.fixture
def system(
    monitoring_dsns: dict[str, str], redis_namespace: str, tmp_path: Path
) -> Iterator[System]:
    launch = isolated_environment(
        monitoring_dsns,
        label="mon",
        redis_namespace=redis_namespace,
        pool_size=2,
        extra={
            "PROMETHEUS_PORT": str(free_port()),
            "ALERTMANAGER_PORT": str(free_port()),
            "MONITORING_SCRAPE_INTERVAL": "1s",
            "MONITORING_EVALUATION_INTERVAL": "1s",
            "MONITORING_ALERT_FOR": "1s",
            "MONITORING_GROUP_WAIT": "0s",
            "MONITORING_GROUP_INTERVAL": "1s",
        },
    )
    launch.env.pop("DASHBOARD_ALERTS_TOKEN", None)  # the one aioshop up makes, not the caller's
    launch.env.pop("DASHBOARD_ALERTS_TOKEN_FILE", None)
    data_dir = tmp_path / "state"
    log = tmp_path / "up.log"
    process = launch.start(["--monitoring"], data_dir, log)
    running = System(process, data_dir, log)
    try:

        async def up() -> bool:
            assert process.poll() is None, running.output()
            text = await asyncio.to_thread(log.read_text, errors="replace")
            return "Ctrl-C stops everything" in text

        asyncio.run(wait_for(up, within=120, interval=0.1))
        yield running
    finally:
        launch.stop()
        asyncio.run(launch.delete_topology())


async def test_a_stopped_instance_raises_an_alert_on_the_dashboard_until_it_answers(
    system: System,
) -> None:
    """The issue asks to kill an instance and see the alert until it is back. A killed process
    is back within half a second (the supervisor restarts it), before a scrape could fail, so
    the test hangs it instead (SIGSTOP: alive, not answering, and the supervisor does not
    restart a stopped process) and lets it answer again (SIGCONT): the same ``up == 0`` that a
    dead instance gives, without a race against the restart."""
    instances = await asyncio.to_thread(system.instances)
    prometheus = instances["prometheus"]["url"]
    dashboard = instances["dashboard"]["url"]
    headers = {"Authorization": f"Bearer {await asyncio.to_thread(_token, ['admin'])}"}
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def up() -> dict[str, float]:
            async with session.get(f"{prometheus}/api/v1/query", params={"query": "up"}) as r:
                body = await r.json()
            return {s["metric"]["instance"]: float(s["value"][1]) for s in body["data"]["result"]}

        async def all_up() -> bool:
            seen = await up()
            return set(seen) >= set(instances) and all(v == 1 for v in seen.values())

        await wait_for(all_up, within=30, interval=0.2)

        async def alerts() -> list[dict[str, Any]]:
            url = f"{dashboard}/dashboard/api/state"
            async with session.get(url, headers=headers) as response:
                assert response.status == 200
                body = await response.json()
            return list(body["view"]["alerts"]["alerts"])

        assert await alerts() == []
        victim = instances["orders"]
        os.kill(victim["pid"], signal.SIGSTOP)
        try:

            async def firing() -> list[dict[str, Any]]:
                return [
                    a
                    for a in await alerts()
                    if a["name"] == "InstanceDown" and a["instance"] == "orders"
                ]

            (alert,) = await wait_for(firing, within=30, interval=0.2)
        finally:
            os.kill(victim["pid"], signal.SIGCONT)
        assert alert["severity"] == "critical"
        assert alert["job"] == "orders"
        assert alert["summary"] == "orders instance orders is down"
        assert alert["graph"].startswith(f"{prometheus}/graph?")
        assert alert["runbook"] == "docs/observability.md#instancedown"

        async def resolved() -> bool:
            return not await firing()

        await wait_for(resolved, within=30, interval=0.2)
    assert system.process.poll() is None

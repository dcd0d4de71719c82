"""The event archive end to end: a whole isolated ``aioshop up`` (its own databases, archive
database, exchange and queues, ports); a registration and an order through the gateway, then
``GET /api/v1/admin/events?correlation_id=`` returns every event of each flow, in order, from
the PostgreSQL backend. Slow: a system of real processes."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import migrations
from core.migrate import drop_database
from core.testing import wait_for
from core.testing.plugin import scratch_database_url
from services import registry
from tests.services.launch import Launch, delete_topology, isolated_environment

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
ORDER_FLOW = ["order.placed", "inventory.reserved", "payment.authorized", "order.confirmed"]


def _admin_token() -> str:
    """An admin's access token signed with the development key pair (the system runs in test
    mode)."""
    from core.app import token_codec
    from services.orders import Settings
    from services.users.roles import permissions_of

    codec = token_codec(Settings(env="test"), signing=True)
    return codec.issue(
        "access",
        user_id=str(uuid.uuid4()),
        roles=["admin"],
        family=str(uuid.uuid4()),
        permissions=sorted(permissions_of(["admin"])),
    ).token


@dataclass
class System:
    process: subprocess.Popen[bytes]
    gateway: str
    log: Path
    admin: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="session")
def flow_dsns(throwaway_database: Callable[[str, Path], str]) -> dict[str, str]:
    return {
        name: throwaway_database(f"archive_flow_{name}", migrations.location(name))
        for name in registry.SERVICES
    }


@pytest.fixture
def system(flow_dsns: dict[str, str], redis_namespace: str, tmp_path: Path) -> Iterator[System]:
    archive_dsn = scratch_database_url(f"test_archive_flow_{uuid.uuid4().hex[:8]}")
    launch = isolated_environment(
        flow_dsns,
        label="archive",
        redis_namespace=redis_namespace,
        extra={"ARCHIVE_ENABLED": "true", "ARCHIVE_DATABASE_URL": archive_dsn},
    )
    # A short path: the control socket lives there, and Unix socket paths are short.
    data_dir = Path(tempfile.mkdtemp(prefix="up-")) / "state"
    log = tmp_path / "up.log"
    process = launch.start([], data_dir, log)
    running = System(process, launch.gateway, log, _admin_token())
    try:
        yield running
    finally:
        launch.stop()
        asyncio.run(_clean_up(launch, archive_dsn))


async def _clean_up(launch: Launch, archive_dsn: str) -> None:
    await delete_topology(launch.exchange, [*launch.queues, f"{launch.exchange}.archive"])
    await drop_database(archive_dsn)


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, token: str | None = None, **kw: Any
) -> tuple[int, Any, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, url, headers=headers, **kw) as response:
        body = await response.json(content_type=None)
        return response.status, body, response.headers.get("X-Correlation-ID", "")


async def _archived(session: aiohttp.ClientSession, system: System, flow: str) -> list[str]:
    """The types of the archived events of ``flow``, page by page (an empty list while the
    gateway has not yet seen the dashboard healthy)."""
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        url = f"{system.gateway}/api/v1/admin/events?correlation_id={flow}&limit=3{cursor}"
        status, page, _ = await _call(session, "GET", url, system.admin)
        if status == 503 and not items:
            return []
        assert status == 200, page
        items += page["items"]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert all(item["correlation_id"] == flow for item in items)
    assert len({item["id"] for item in items}) == len(items)  # each event once
    assert [i["occurred_at"] for i in items] == sorted(i["occurred_at"] for i in items)
    return [item["type"] for item in items]


async def test_a_registration_and_an_order_are_found_by_their_correlation_ids(
    system: System,
) -> None:
    def up() -> bool:
        assert system.process.poll() is None, system.output()[-3000:]
        return "Ctrl-C stops everything" in system.output()

    async def started() -> bool:
        return await asyncio.to_thread(up)

    await wait_for(started, within=180)
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        gateway = system.gateway
        product: dict[str, Any] = {
            "sku": f"ARC-{uuid.uuid4().hex[:8]}",
            "name": "Archived",
            "price_cents": 250,
        }
        status, body, _ = await _call(
            session,
            "POST",
            f"{gateway}/api/v1/products",
            system.admin,
            json={**product, "stock": 10},
        )
        assert status == 201, body
        email = f"archive-{uuid.uuid4().hex[:8]}@example.com"
        status, user, registration = await _call(
            session,
            "POST",
            f"{gateway}/api/v1/auth/register",
            json={"email": email, "password": PASSWORD, "full_name": "Archived"},
        )
        assert status == 201, user
        status, tokens, _ = await _call(
            session,
            "POST",
            f"{gateway}/api/v1/auth/login",
            json={"email": email, "password": PASSWORD},
        )
        assert status == 200, tokens
        order_body = {
            "items": [{"product_id": body["id"], "quantity": 2}],
            "shipping_address": {"name": "Archived", "line1": "1 Log Lane", "city": "Localhost"},
            "payment": {"token": "tok_visa"},
        }
        status, order, placing = await _call(
            session, "POST", f"{gateway}/api/v1/orders", tokens["access_token"], json=order_body
        )
        assert status == 202, order
        assert registration
        assert placing != registration

        async def whole_flow() -> list[str] | None:
            types = await _archived(session, system, placing)
            return types if "order.confirmed" in types else None

        types = await wait_for(whole_flow, within=30)
        assert types is not None
        steps = [t for t in types if t in ORDER_FLOW]
        assert steps == ORDER_FLOW, types  # each once, in the saga's order

        async def registered() -> list[str] | None:
            return await _archived(session, system, registration) or None

        assert await wait_for(registered, within=30) == ["user.registered"]
        forbidden = await _call(
            session, "GET", f"{gateway}/api/v1/admin/events", tokens["access_token"]
        )
        assert forbidden[0] == 403

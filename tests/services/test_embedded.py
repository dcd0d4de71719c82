"""``aioshop up --embedded``: the whole system in one process on embedded PostgreSQL and Redis.

Runs the real command as a process with its data in a temporary directory, talks to it only
through the gateway, stops it with Ctrl-C, and starts it again on the same data.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.testing import free_port
from services import registry
from services.embedded import CONFIG_VARIABLES, servers_available

CLI = [sys.executable, "-m", "services.cli"]
ADMIN = ("embedded-admin@example.com", "embedded-admin-password")


def test_servers_are_available_when_configured_or_answering() -> None:
    closed = {"PostgreSQL": free_port(), "Redis": free_port()}
    assert not servers_available({}, closed)
    assert servers_available({"REDIS_URL": "redis://elsewhere:6379/0"}, closed)
    assert servers_available({"USERS_DATABASE_URL": "postgresql://db/users"}, closed)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert servers_available({}, {**closed, "RabbitMQ": listener.getsockname()[1]})


class Embedded:
    """One ``aioshop up --embedded`` process."""

    def __init__(self, data_dir: Path, ports: dict[str, int]) -> None:
        env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
        env.update(
            {f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
            AIOSHOP_ENV="development",
            BCRYPT_ROUNDS="4",
            LOG_LEVEL="WARNING",
            ADMIN_EMAIL=ADMIN[0],
            ADMIN_PASSWORD=ADMIN[1],
        )
        self.gateway = f"http://127.0.0.1:{ports['gateway']}"
        self.process = subprocess.Popen(  # noqa: S603
            [*CLI, "up", "--embedded", "--data-dir", str(data_dir), "--demo", "40"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.output = self._read_until("Ctrl-C stops everything", within=120)

    def _read_until(self, marker: str, within: float) -> str:
        assert self.process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if marker in line:
                break
        return "".join(lines)

    def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        """A request through the gateway: (status, parsed JSON body or None)."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310
            self.gateway + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                raw = response.read()
                return int(response.status), json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def login(self, email: str, password: str) -> str:
        status, tokens = self.call(
            "POST", "/api/v1/auth/login", {"email": email, "password": password}
        )
        assert status == 200, tokens
        token: str = tokens["access_token"]
        return token

    def wait_for_order(self, order_id: str, token: str, within: float = 20) -> Any:
        """The order once its status is final (fails after ``within`` seconds)."""
        deadline = time.monotonic() + within
        while True:
            status, order = self.call("GET", f"/api/v1/orders/{order_id}", token=token)
            assert status == 200, order
            if order["status"] != "pending":
                return order
            assert time.monotonic() < deadline, f"still pending after {within} s: {order}"
            time.sleep(0.1)  # polling interval of a wait with a deadline

    def dashboard_saga(self, order_id: str, token: str, within: float = 10) -> Any:
        """The dashboard's view of an order's saga, through the gateway, once it is final
        (``token``: a holder of ``metrics:read``; the public view hides order ids)."""
        deadline = time.monotonic() + within
        while True:
            status, state = self.call("GET", "/dashboard/api/state", token=token)
            assert status == 200, state
            sagas = [s for s in state["view"]["sagas"] if s["order_id"] == order_id]
            if sagas and sagas[0]["status"] not in (None, "pending", "placed"):
                return sagas[0]
            assert time.monotonic() < deadline, f"no final saga for {order_id}: {sagas}"
            time.sleep(0.1)  # polling interval of a wait with a deadline

    def stop(self) -> int:
        """Ctrl-C; the exit code."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=60)
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()

    def kill(self) -> None:
        """After a failure: Ctrl-C first (it stops the embedded servers), SIGKILL if stuck."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def ports() -> dict[str, int]:
    names = [*registry.SERVICES, "web", "gateway"]
    return {name: free_port() for name in names}


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"
    postmaster = tmp_path / "data" / "postgres" / "postmaster.pid"
    assert not postmaster.exists(), "the embedded PostgreSQL outlived its process"


def test_embedded_runs_the_system_in_one_process_and_keeps_its_data(
    data_dir: Path, ports: dict[str, int]
) -> None:
    system = Embedded(data_dir, ports)
    try:
        assert "aioshop is up (embedded" in system.output, system.output
        assert system.gateway in system.output
        status, ready = system.call("GET", "/readyz")
        assert status == 200, ready
        listing = system.call("GET", "/api/v1/products?limit=100")
        assert len(listing[1]["items"]) == 40, listing  # --demo

        email = f"embedded-{uuid.uuid4().hex[:8]}@example.com"
        user = {"email": email, "password": "long-enough-pw", "full_name": "Em Bedded"}
        status, created = system.call("POST", "/api/v1/auth/register", user)
        assert status == 201, created
        token = system.login(email, "long-enough-pw")
        assert system.call("GET", "/api/v1/users/me", token=token)[1]["email"] == email

        admin = system.login(*ADMIN)
        product = {"sku": f"EMB-{uuid.uuid4().hex[:6]}", "name": "Lamp", "price_cents": 1999}
        status, made = system.call("POST", "/api/v1/products", {**product, "stock": 5}, admin)
        assert status == 201, made
        status, read = system.call("GET", f"/api/v1/products/{made['id']}")
        assert (status, read["stock"], read["price_cents"]) == (200, 5, 1999)

        # An order, through the gateway, to its saga's end; the dashboard saw it happen.
        order = {
            "items": [{"product_id": made["id"], "quantity": 2}],
            "shipping_address": {"line1": "1 Main St", "city": "Springfield"},
            "payment": {"token": "tok_visa"},
        }
        status, placed = system.call("POST", "/api/v1/orders", order, token)
        assert (status, placed["status"]) == (202, "pending"), placed
        final = system.wait_for_order(placed["id"], token)
        assert (final["status"], final["total_cents"]) == ("confirmed", 2 * 1999), final
        status, stock = system.call("GET", f"/api/v1/products/{made['id']}/inventory")
        assert (stock["reserved"], stock["available"]) == (2, 3), stock
        saga = system.dashboard_saga(placed["id"], admin)
        assert saga["status"] == "confirmed", saga
        assert system.stop() == 0
    finally:
        system.kill()

    again = Embedded(data_dir, ports)
    try:
        assert "aioshop is up (embedded" in again.output, again.output
        token = again.login(email, "long-enough-pw")  # the account survived the restart
        # The demo catalog is seeded once: 40, and the product made above.
        assert len(again.call("GET", "/api/v1/products?limit=100")[1]["items"]) == 41
        status, read = again.call("GET", f"/api/v1/products/{made['id']}")
        assert (status, read["sku"]) == (200, product["sku"])
        assert again.stop() == 0
    finally:
        again.kill()


BURST = 60
BURSTS = 3


async def _burst(gateway: str, token: str, order: dict[str, Any]) -> list[tuple[int, str]]:
    """``BURST`` orders placed at once (distinct Idempotency-Keys): each one's status and body."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def place() -> tuple[int, str]:
            key = {"Idempotency-Key": uuid.uuid4().hex}
            async with session.post(
                f"{gateway}/api/v1/orders", json=order, headers={**headers, **key}
            ) as response:
                return response.status, await response.text()

        return await asyncio.gather(*(place() for _ in range(BURST)))


@pytest.mark.slow
def test_embedded_takes_a_burst_of_concurrent_orders_without_errors(
    data_dir: Path, ports: dict[str, int]
) -> None:
    # Several bursts: after the first, the gateway's rate-limit hits go to Redis beside each
    # revocation check, two connections per request; redis-py's default pool refused (and the
    # gateway answered 503) past 100 in use.
    system = Embedded(data_dir, ports)
    try:
        email = f"burst-{uuid.uuid4().hex[:8]}@example.com"
        user = {"email": email, "password": "long-enough-pw", "full_name": "Bur St"}
        assert system.call("POST", "/api/v1/auth/register", user)[0] == 201
        token = system.login(email, "long-enough-pw")
        status, listing = system.call("GET", "/api/v1/products?limit=1")
        assert status == 200, listing
        order = {
            "items": [{"product_id": listing["items"][0]["id"], "quantity": 1}],
            "shipping_address": {"line1": "1 Main St", "city": "Springfield"},
            "payment": {"token": "tok_visa"},
        }
        for _ in range(BURSTS):
            results = asyncio.run(_burst(system.gateway, token, order))
            statuses = Counter(status for status, _ in results)
            failed = [body for status, body in results if status != 202]
            assert statuses == Counter({202: BURST}), (statuses, failed[:1])
        assert system.stop() == 0
    finally:
        system.kill()

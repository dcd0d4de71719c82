"""``aioshop up`` keeps serving through failures, end to end: a whole isolated system (its own
databases, Redis namespace, bus exchange and queues, ports) with two products instances under a
steady load through the gateway, while one instance is SIGKILLed, then while
``aioshop restart products`` replaces both. Slow: minutes of real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import migrations
from services import registry
from services.control import running_supervisor
from tests.services.launch import CLI, isolated_environment

pytestmark = pytest.mark.slow


def _token(roles: list[str]) -> str:
    """An access token signed with the development key pair (the system runs in test mode)."""
    from core.app import token_codec
    from services.orders import Settings
    from services.users.roles import permissions_of

    codec = token_codec(Settings(env="test"), signing=True)
    return codec.issue(
        "access",
        user_id=str(uuid.uuid4()),
        roles=roles,
        family=str(uuid.uuid4()),
        permissions=sorted(permissions_of(roles)),
    ).token


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _json(url: str, body: object, token: str) -> Any:
    request = urllib.request.Request(  # noqa: S310
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{url}: {exc.code} {exc.read()[:500]!r}") from exc


def _gateway_sees(gateway: str, instance: str) -> bool:
    """Whether the gateway has ``instance`` of products in rotation."""
    try:
        with urllib.request.urlopen(f"{gateway}/metrics", timeout=2) as response:  # noqa: S310
            text = response.read().decode()
    except OSError:
        return False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "gateway_instance_healthy"
                and sample.labels.get("upstream") == "products"
                and sample.labels.get("instance") == instance
            ):
                return sample.value == 1
    return False


@dataclass
class System:
    """A running ``aioshop up`` of this file."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    gateway: str
    log: Path
    env: dict[str, str]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def instances(self) -> dict[str, dict[str, Any]]:
        state = running_supervisor(self.data_dir)
        assert state is not None, self.output()[-3000:]
        return {p["name"]: p for p in state["processes"]}

    def wait(self, condition: Callable[[], bool], within: float, what: str) -> float:
        """Seconds until ``condition()`` held (fails after ``within``)."""
        started = time.monotonic()
        while not condition():
            assert self.process.poll() is None, f"aioshop up stopped:\n{self.output()[-3000:]}"
            assert time.monotonic() - started < within, f"{what}:\n{self.output()[-3000:]}"
            time.sleep(0.05)  # polling interval of a wait with a deadline
        return time.monotonic() - started


@pytest.fixture(scope="session")
def heal_dsns(throwaway_database: Callable[[str, Path], str]) -> dict[str, str]:
    """Databases of this file's systems (migrated once, before any test runs under the
    blocking-call guard)."""
    return {
        name: throwaway_database(f"heal_{name}", migrations.location(name))
        for name in registry.SERVICES
    }


@pytest.fixture
def system(heal_dsns: dict[str, str], redis_namespace: str, tmp_path: Path) -> Iterator[System]:
    launch = isolated_environment(
        heal_dsns,
        label="heal",
        redis_namespace=redis_namespace,
        pool_size=4,
        extra={"RATE_LIMIT_DEFAULT": "100000000/60", "RATE_LIMIT_AUTH": "100000000/60"},
    )
    # A short path: the control socket lives there, and Unix socket paths are short.
    data_dir = Path(tempfile.mkdtemp(prefix="up-")) / "state"
    log = tmp_path / "up.log"
    process = launch.start(["--replicas", "products=2"], data_dir, log)
    running = System(process, data_dir, launch.gateway, log, launch.env)
    try:
        running.wait(lambda: "Ctrl-C stops everything" in running.output(), 180, "not up")
        yield running
    finally:
        launch.stop()
        asyncio.run(launch.delete_topology())


@dataclass
class Outcome:
    """One request of the load: when it started and ended, and how it went."""

    kind: str
    started: float
    ended: float
    ok: bool
    detail: str


@dataclass
class Load:
    """A steady closed-loop load through the gateway, in a thread with its own event loop:
    ``readers`` loops of catalog reads, one of product creations (admin) and one of order
    placements (customer, priced by orders from the products instances directly)."""

    gateway: str
    products: list[str]
    readers: int = 6
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        # Signed here: reading the development keys is no work for the event loop.
        admin = {"Authorization": f"Bearer {_token(['admin'])}"}
        customer = {"Authorization": f"Bearer {_token(['customer'])}"}
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run(admin, customer)), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=60)

    def failures(self, since: float = 0.0) -> list[Outcome]:
        return [o for o in list(self.outcomes) if not o.ok and o.started >= since]

    def count(self, since: float = 0.0, until: float = float("inf")) -> int:
        return sum(1 for o in list(self.outcomes) if since <= o.started <= until)

    def ran(self, since: float = 0.0, requests: int = 200) -> Callable[[], bool]:
        """A condition: ``requests`` requests started since ``since`` and ended, at least one of
        every kind (a phase of the test measured in work done, not in seconds)."""

        def enough() -> bool:
            done = [o for o in list(self.outcomes) if o.started >= since]
            kinds = {o.kind for o in done}
            return len(done) >= requests and kinds >= {"read", "create", "order"}

        return enough

    async def _run(self, admin: dict[str, str], customer: dict[str, str]) -> None:
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(
                *(self._loop(session, "read", self._read) for _ in range(self.readers)),
                self._loop(session, "create", lambda s: self._create(s, admin)),
                self._loop(session, "order", lambda s: self._order(s, customer)),
            )

    async def _loop(
        self,
        session: aiohttp.ClientSession,
        kind: str,
        call: Callable[[aiohttp.ClientSession], Any],
    ) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                ok, detail = await call(session)
            except (aiohttp.ClientError, TimeoutError) as exc:
                ok, detail = False, repr(exc)
            self.outcomes.append(Outcome(kind, started, time.monotonic(), ok, detail))
            await asyncio.sleep(0.01)  # a steady pace: about 100 requests per second per loop

    async def _read(self, session: aiohttp.ClientSession) -> tuple[bool, str]:
        async with session.get(f"{self.gateway}/api/v1/products?limit=5") as response:
            await response.read()
            return response.status == 200, f"read {response.status}"

    async def _create(
        self, session: aiohttp.ClientSession, headers: dict[str, str]
    ) -> tuple[bool, str]:
        body = {"sku": f"HEAL-{uuid.uuid4().hex[:12]}", "name": "Heal", "price_cents": 100}
        async with session.post(
            f"{self.gateway}/api/v1/products", json=body, headers=headers
        ) as response:
            text = await response.text()
            return response.status == 201, f"create {response.status} {text[:200]}"

    async def _order(
        self, session: aiohttp.ClientSession, headers: dict[str, str]
    ) -> tuple[bool, str]:
        body = {
            "items": [{"product_id": self.products[0], "quantity": 1}],
            "shipping_address": {"name": "Heal", "line1": "1 Loop Road", "city": "Localhost"},
            "payment": {"token": "tok_visa"},
        }
        async with session.post(
            f"{self.gateway}/api/v1/orders", json=body, headers=headers
        ) as response:
            text = await response.text()
            return response.status == 202, f"order {response.status} {text[:200]}"


def _seed(system: System) -> list[str]:
    body = {"sku": f"HEAL-{uuid.uuid4().hex[:8]}", "name": "Stock", "price_cents": 250}
    product = _json(
        f"{system.gateway}/api/v1/products", {**body, "stock": 1_000_000}, _token(["admin"])
    )
    return [str(product["id"])]


def _report(name: str, figures: dict[str, object]) -> None:
    print(f"\n{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), file=sys.stderr)


def test_a_products_instance_killed_under_load_is_back_in_rotation_within_10_s(
    system: System,
) -> None:
    load = Load(system.gateway, _seed(system))
    load.start()
    try:
        system.wait(load.ran(), 60, "the load did not get going")  # its baseline: no failure
        assert load.failures() == [], load.failures()[:5]
        victim = system.instances()["products-1"]
        killed_at = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)

        def replaced() -> bool:
            now = system.instances()["products-1"]
            return now["pid"] not in (None, victim["pid"])

        system.wait(replaced, 10, "products-1 not started again")
        system.wait(lambda: _status(f"{victim['url']}/readyz") == 200, 10, "not ready")
        ready = time.monotonic() - killed_at
        system.wait(
            lambda: _gateway_sees(system.gateway, "products-1"),
            10,
            "products-1 not back in the gateway's rotation",
        )
        back_in_rotation = time.monotonic() - killed_at
        system.wait(load.ran(since=time.monotonic()), 60, "no load served with both instances")
        assert system.process.poll() is None
        requests = load.count(since=killed_at - 1)
        failures = load.failures(since=killed_at - 1)
    finally:
        load.stop()
    output = system.output()
    assert "products-1 was killed by SIGKILL; restarting it in" in output
    # Only requests in flight on the killed instance may fail: the gateway retries reads and
    # whatever was not sent; orders fails over to the other products instance.
    assert len(failures) <= 3, [f.detail for f in failures]
    assert all(f.kind != "read" for f in failures), [f.detail for f in failures]
    assert back_in_rotation < 10
    assert load.count(since=killed_at + back_in_rotation) > 0  # served after it came back
    _report(
        "kill",
        {
            "requests_from_1s_before": requests,
            "failed": len(failures),
            "failures": [f.detail[:60] for f in failures],
            "ready_s": round(ready, 2),
            "back_in_rotation_s": round(back_in_rotation, 2),
            "total_requests": len(load.outcomes),
        },
    )


def test_a_rolling_restart_under_load_fails_no_request(system: System) -> None:
    load = Load(system.gateway, _seed(system))
    before = {name: p["pid"] for name, p in system.instances().items()}
    load.start()
    try:
        system.wait(load.ran(), 60, "the load did not get going")
        started = time.monotonic()
        restart = subprocess.run(  # noqa: S603
            [*CLI, "restart", "products", "--data-dir", str(system.data_dir), "--timeout", "120"],
            env=system.env,
            capture_output=True,
            text=True,
            timeout=150,
        )
        duration = time.monotonic() - started
        system.wait(load.ran(since=time.monotonic()), 60, "no load served after the restart")
    finally:
        load.stop()
    assert restart.returncode == 0, restart.stdout + restart.stderr + system.output()[-3000:]
    assert "every products instance replaced" in restart.stdout
    after = {name: p["pid"] for name, p in system.instances().items()}
    for name in ("products-0", "products-1"):
        assert after[name] not in (None, before[name]), (before, after)
    for name in ("users", "orders", "gateway"):
        assert after[name] == before[name]
    during = load.count(since=started, until=started + duration)
    failures = load.failures()
    assert failures == [], [f.detail for f in failures[:10]]
    assert system.process.poll() is None
    by_kind = {k: sum(1 for o in load.outcomes if o.kind == k) for k in ("read", "create", "order")}
    assert all(by_kind.values()), by_kind
    _report(
        "rolling restart",
        {
            "restart_s": round(duration, 1),
            "requests_during": during,
            "by_kind": by_kind,
            "failed": len(failures),
        },
    )
    print(restart.stdout, file=sys.stderr)

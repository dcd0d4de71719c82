"""perf/locustfile.py drives the real system: every scenario's requests happen and none fails.

Runs ``locust -f perf/locustfile.py --headless -u 10 -r 10 -t 15s`` against the system of
``tests.security.conftest`` (each service its own process behind the gateway), after creating
the admin with ``aioshop create-admin`` and a small catalog through the API, then reads the
CSV statistics. Locust runs in a subprocess: importing it here would monkey-patch this process
with gevent.
"""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.security.conftest import System

ROOT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).parent / "locust"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    # Checked before the system starts; find_spec does not import (locust patches with gevent).
    pytest.mark.skipif(
        importlib.util.find_spec("locust") is None or not LOCUST.exists(),
        reason="locust is not installed (the bench extra: pip install -e '.[bench]')",
    ),
]
ADMIN_EMAIL = "load-admin@example.com"
ADMIN_PASSWORD = "load admin password"

# (method, name) of every request the scenarios make, by route template.
EXPECTED = {
    ("GET", "/api/v1/categories"),
    ("GET", "/api/v1/products"),
    ("GET", "/api/v1/products?q="),
    ("GET", "/api/v1/products/{id}"),
    ("GET", "/api/v1/products/batch"),
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("GET", "/api/v1/users/me"),
    ("POST", "/api/v1/orders"),
    ("GET", "/api/v1/orders"),
    ("GET", "/api/v1/orders/{id}"),
    ("POST", "/api/v1/orders/{id}/cancel"),
    ("GET", "/api/v1/products/{id}/inventory"),
    ("PUT", "/api/v1/products/{id}/inventory"),
}
# What the demo catalog sells (the locustfile searches for some of these words).
NAMES = ("Desk Lamp", "Ceramic Mug", "Wireless Headphones", "Leather Boots", "Oak Chair", "Tent")


def _create_admin(system: System) -> None:
    """The admin, made the way an operator makes one: ``aioshop create-admin``."""
    env = {
        **os.environ,
        "AIOSHOP_ENV": "test",
        "BCRYPT_ROUNDS": "4",
        "USERS_DATABASE_URL": system.users_dsn,
        "REDIS_NAMESPACE": system.redis_namespace,
        "LOAD_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    command = [sys.executable, "-m", "services.cli", "create-admin", ADMIN_EMAIL]
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [*command, "--password-env", "LOAD_ADMIN_PASSWORD"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def _seed_catalog(url: str) -> None:
    """Two categories and a product of each name in each, in stock, made by the admin."""
    async with aiohttp.ClientSession(base_url=url) as http:
        credentials = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        async with http.post("/api/v1/auth/login", json=credentials) as response:
            assert response.status == 200, await response.text()
            token = (await response.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        for department in ("Home", "Outdoors"):
            body: dict[str, Any] = {"name": department, "slug": department.lower()}
            async with http.post("/api/v1/categories", json=body, headers=headers) as response:
                assert response.status == 201, await response.text()
                category = (await response.json())["id"]
            for i, name in enumerate(NAMES):
                body = {
                    "sku": f"LOAD-{uuid.uuid4().hex[:10]}",
                    "name": f"{name} {department}",
                    "price_cents": 999 + 1000 * i,
                    "stock": 500,
                    "category_id": category,
                }
                async with http.post("/api/v1/products", json=body, headers=headers) as response:
                    assert response.status == 201, await response.text()


def _stats(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(file) if row["Type"]}


def test_every_scenario_runs_without_a_failure(system: System, tmp_path: Path) -> None:
    _create_admin(system)
    asyncio.run(_seed_catalog(system.url))
    prefix = tmp_path / "load"
    env = {
        **os.environ,
        "AIOSHOP_ADMIN_EMAIL": ADMIN_EMAIL,
        "AIOSHOP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        # Refresh the access token after 5 s (900 s otherwise), so that the run refreshes too.
        "AIOSHOP_LOAD_REFRESH_AFTER": "5",
        # A fifth of the think times: each journey (a buyer's order and its cancel) fits in 15 s.
        "AIOSHOP_LOAD_THINK": "0.2",
    }
    command = [str(LOCUST), "-f", str(ROOT / "perf" / "locustfile.py"), "--headless"]
    command += ["-u", "10", "-r", "10", "-t", "15s", "--host", system.url, "--csv", str(prefix)]
    result = subprocess.run(  # noqa: S603 - the venv's locust, fixed arguments
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    output = (result.stdout + result.stderr)[-6000:]
    stats = _stats(Path(f"{prefix}_stats.csv"))
    failures = Path(f"{prefix}_failures.csv").read_text(encoding="utf-8")
    exceptions = Path(f"{prefix}_exceptions.csv").read_text(encoding="utf-8")

    counts = {key: int(row["Request Count"]) for key, row in stats.items()}
    missing = sorted(key for key in EXPECTED if counts.get(key, 0) == 0)
    assert missing == [], (missing, output)
    unnamed = sorted(key for key in counts if key not in EXPECTED and key[1] != "Aggregated")
    assert unnamed == [], "every request is named by its route template"
    failed = {
        key: row["Failure Count"] for key, row in stats.items() if row["Failure Count"] != "0"
    }
    if failed:  # the whole failure lines: an assertion's message would be cut in the middle
        pytest.fail(f"failed requests: {failed}\n{failures}\n{output}", pytrace=False)
    assert len(exceptions.splitlines()) == 1, exceptions  # the header alone
    assert result.returncode == 0, output
    system.assert_alive()

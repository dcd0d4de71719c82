"""The dashboard in a real headless Chromium (Debian's, driven by Playwright), under a small load.

The users and products services and the dashboard run on real ports over one in-memory bus; a
load of registrations, product reads and failing requests runs while the page is watched. The
test fails on any console error (a CSP violation is one), on a number that never moves, on an
empty chart, or on a value that ran as HTML. Its screenshot goes to ``$AIOSHOP_ARTIFACTS`` (by
default ``<tmp>/aioshop-artifacts``).

CI needs the browser: ``apt-get install -y chromium`` (and ``fonts-dejavu-core`` for text).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient

from core.bus import Bus, Envelope, InMemoryTransport, Message
from core.context import correlation_id
from core.testing import wait_for
from services.products import Settings as ProductsSettings
from services.products import create_products_app
from services.products.events import OrderLine, OrderPlaced
from services.users import Settings as UsersSettings
from services.users import create_users_app
from tests.web.conftest import WebSettingsFactory
from web import create_web_app

CHROMIUM = os.environ.get("AIOSHOP_CHROMIUM", "/usr/bin/chromium")
EVIL = "<script>alert('pwned')</script>"
Client = TestClient[Any, Any]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None,
        reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium",
    ),
]


@pytest.fixture(autouse=True)
def blockbuster() -> None:
    """Off for this module: Playwright's driver does file I/O in the loop, which is not ours
    (every other test of the dashboard runs under the guard)."""


def artifacts_dir() -> Path:
    """Where test artifacts go: ``$AIOSHOP_ARTIFACTS`` or a directory under the tmp dir."""
    configured = os.environ.get("AIOSHOP_ARTIFACTS")
    path = Path(configured) if configured else Path(tempfile.gettempdir()) / "aioshop-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fake_orders(transport: InMemoryTransport) -> tuple[Bus, dict[str, str]]:
    """The order service's side of the saga, enough for the page: it places orders (of a product
    that does not exist) and rejects them when the real products service says so."""
    bus = Bus(transport, source="orders")
    customers: dict[str, str] = {}

    async def answer(message: Message) -> None:
        data = message.envelope.data
        rejected = {
            "order_id": data["order_id"],
            "user_id": customers.get(data["order_id"], str(uuid.uuid4())),
            "reason": data["reason"],
        }
        await bus.publish_envelope(
            Envelope(
                type="order.rejected",
                data=rejected,
                source="orders",
                correlation_id=message.envelope.correlation_id,
                causation_id=str(message.envelope.id),
            )
        )

    bus.subscribe("inventory.reservation_failed", answer, queue="fake-orders")
    return bus, customers


async def _place_orders(bus: Bus, customers: dict[str, str], stop: asyncio.Event) -> None:
    while not stop.is_set():
        # A product whose name is markup: the page must show it as text.
        await bus.publish_envelope(
            Envelope(
                type="product.created",
                source="products",
                data={
                    "product_id": str(uuid.uuid4()),
                    "sku": "EVIL-1",
                    "name": EVIL,
                    "price_cents": 1250,
                    "currency": "USD",
                    "category_id": None,
                    "attributes": {},
                    "stock": 0,
                    "created_at": "2026-01-01T00:00:00Z",
                },
            )
        )
        order = OrderPlaced(
            order_id=uuid.uuid4(),
            user_id=uuid.uuid4(),
            items=[OrderLine(product_id=uuid.uuid4(), quantity=1, unit_price_cents=1250)],
            total_cents=1250,
            currency="USD",
        )
        customers[str(order.order_id)] = str(order.user_id)
        correlation = correlation_id.set(f"browser-{uuid.uuid4().hex[:8]}")
        try:
            await bus.publish(order)
        finally:
            correlation_id.reset(correlation)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)  # an order every two seconds


async def _load(users: str, products: str, stop: asyncio.Event) -> int:
    """Requests until ``stop``: registrations, product reads, a 404 and a 401 now and then."""
    sent = 0
    async with ClientSession() as session:
        while not stop.is_set():
            sent += 1
            requests = [session.get(f"{products}/api/v1/products?limit=5")]
            if sent % 3 == 0:
                requests.append(session.get(f"{products}/api/v1/products/{uuid.uuid4()}"))
            if sent % 5 == 0:
                body = {
                    "email": f"load-{uuid.uuid4().hex[:10]}@example.com",
                    "password": "long-enough-pw",
                    "full_name": "Load Tester",
                }
                requests.append(session.post(f"{users}/api/v1/auth/register", json=body))
            if sent % 7 == 0:
                requests.append(session.get(f"{users}/api/v1/users/me"))
            for request in requests:
                async with request as response:
                    await response.read()
            await asyncio.sleep(0.01)  # pacing of the load generator
    return sent


async def test_the_dashboard_goes_live_in_chromium_while_a_load_runs(
    service_client: Callable[[web.Application], Awaitable[Client]],
    users_settings: UsersSettings,
    products_settings: ProductsSettings,
    web_settings: WebSettingsFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    monkeypatch.setenv("METRICS_SNAPSHOT_INTERVAL", "0.5")
    transport = InMemoryTransport()
    users = await service_client(create_users_app(users_settings, transport=transport))
    products = await service_client(create_products_app(products_settings, transport=transport))
    dashboard = await service_client(
        create_web_app(
            web_settings(dashboard_push_interval=0.5, metrics_snapshot_interval=0.5),
            transport=transport,
        )
    )
    users_url = str(users.make_url("")).rstrip("/")
    products_url = str(products.make_url("")).rstrip("/")
    page_url = str(dashboard.make_url("/dashboard"))

    stop = asyncio.Event()
    sent = 0
    orders, customers = _fake_orders(transport)
    await orders.start()
    load = asyncio.create_task(_load(users_url, products_url, stop))
    placing = asyncio.create_task(_place_orders(orders, customers, stop))
    problems: list[str] = []
    dialogs: list[str] = []
    screenshot = artifacts_dir() / "dashboard.png"
    try:
        async with playwright_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM)
            try:
                page = await browser.new_page(viewport={"width": 1440, "height": 1300})
                page.on(
                    "console",
                    lambda m: (
                        problems.append(f"console {m.type}: {m.text}")
                        if m.type in ("error", "warning")
                        else None
                    ),
                )
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on("dialog", lambda d: dialogs.append(d.message))
                response = await page.goto(page_url)
                assert response is not None
                assert response.status == 200
                assert await page.title() == "aioshop · live dashboard"

                async def live() -> bool:
                    return await page.locator("#conn").inner_text() == "live"

                await wait_for(live, within=10)

                seen: set[str] = set()

                async def rps_moves() -> bool:
                    seen.add(await page.locator("#total-rps").inner_text())
                    return len(seen - {"0.0"}) >= 3

                await wait_for(rps_moves, within=30, interval=0.25)

                async def instances_shown() -> bool:
                    rows = await page.locator("#instances tbody tr[data-key]").count()
                    return rows >= 3  # users, products and the dashboard itself

                await wait_for(instances_shown, within=10)

                async def charts_filled() -> bool:
                    charts = page.locator("svg.chart-svg")
                    for n in range(await charts.count()):
                        if await charts.nth(n).locator("path.series").count() == 0:
                            return False
                    # The request chart's oldest point is near its left edge: the history
                    # spans the whole time axis.
                    chart = charts.first
                    d = await chart.locator("path.series").first.get_attribute("d")
                    box = await chart.bounding_box()
                    if d is None or box is None:
                        return False
                    first_x = float(d[1:].split(",", 1)[0])
                    return d.count("L") >= 20 and first_x < 0.2 * box["width"]

                await wait_for(charts_filled, within=40, interval=0.25)

                async def saga_shown() -> bool:
                    steps = await page.locator("#sagas .steps").all_inner_texts()
                    return any("reservation failed" in s and "rejected" in s for s in steps)

                await wait_for(saga_shown, within=10)

                async def evil_shown_as_text() -> bool:
                    return EVIL in await page.locator("#events").inner_text()

                await wait_for(evil_shown_as_text, within=10)
                health = await page.locator("#instances .badge").all_inner_texts()
                assert set(health) <= {"up", "degraded"}, health
                await page.screenshot(path=str(screenshot), full_page=True)
            finally:
                await browser.close()
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            sent = await load
        await placing
    print(f"dashboard screenshot: {screenshot}")
    assert sent > 50
    assert problems == []
    assert dialogs == []
    assert screenshot.stat().st_size > 10_000

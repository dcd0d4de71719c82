"""The dashboard in a real headless Chromium (Debian's, driven by Playwright), under a small load.

The users and products services and the dashboard run on real ports over one in-memory bus, the
gateway in front of them (the page signs in through its ``/api/v1/auth/login``, same origin); a
load of registrations, product reads and failing requests runs while the page is watched. The
test fails on any unexpected console error (a CSP violation is one), on a number that never
moves, on an empty chart, on a value that ran as HTML, or on a token kept anywhere but in the
page's memory. Its screenshots (the login form, the live dashboard, the public one) go to
``$AIOSHOP_ARTIFACTS`` (by default ``<tmp>/aioshop-artifacts``).

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

import asyncpg
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient

from core.bus import Bus, Envelope, InMemoryTransport, Message
from core.context import correlation_id
from core.testing import wait_for
from gateway import Settings as GatewaySettings
from gateway import create_gateway_app
from services.orders.events import OrderLine, OrderPlaced
from services.products import Settings as ProductsSettings
from services.products import create_products_app
from services.users import Settings as UsersSettings
from services.users import create_users_app
from tests.web.conftest import WebSettingsFactory, envelope, snapshot_data
from web import create_web_app

CHROMIUM = os.environ.get("AIOSHOP_CHROMIUM", "/usr/bin/chromium")
EVIL = "<script>alert('pwned')</script>"
EVIL_PRODUCT = "<script>alert(1)</script><img src=x onerror=alert(1)>"
EVIL_HOST = "<img src=x onerror=alert('host')>"
EVIL_INSTANCE = "<b onmouseover=alert(2)>evil</b>:1"
CLOSED = "http://127.0.0.1:1"  # nothing listens there
Client = TestClient[Any, Any]
# What the browser logs for the refusals the test provokes on purpose (a wrong password, an
# account without metrics:read); anything else in the console fails the test.
EXPECTED_CONSOLE = ("the server responded with a status of 401", "status of 403")

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
                    "name": EVIL_PRODUCT,
                    "price_cents": 1250,
                    "currency": "USD",
                    "category_id": None,
                    "attributes": {},
                    "stock": 0,
                    "created_at": "2026-01-01T00:00:00Z",
                },
            )
        )
        # An instance whose host and name are markup (only shown to metrics:read holders).
        await bus.publish_envelope(
            envelope(
                "metrics.snapshot",
                snapshot_data(service="evil", instance=EVIL_INSTANCE, host=EVIL_HOST),
                source="evil",
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


async def _account(
    users: str, users_dsn: str, *, admin: bool, password: str = "long-enough-pw"
) -> str:
    """Register an account (an admin: every permission, ``metrics:read`` too); its email."""
    email = f"dash-{uuid.uuid4().hex[:10]}@example.com"
    async with ClientSession() as session:
        body = {"email": email, "password": password, "full_name": "Dashboard Tester"}
        async with session.post(f"{users}/api/v1/auth/register", json=body) as response:
            assert response.status == 201, await response.text()
    if admin:
        connection = await asyncpg.connect(users_dsn)
        try:
            await connection.execute(
                "UPDATE users SET roles = ARRAY['admin', 'customer'] WHERE email = $1", email
            )
        finally:
            await connection.close()
    return email


def _watch(page: Any, problems: list[str], dialogs: list[str]) -> None:
    def console(message: Any) -> None:
        if message.type not in ("error", "warning"):
            return
        if message.type == "error" and any(text in message.text for text in EXPECTED_CONSOLE):
            return
        problems.append(f"console {message.type}: {message.text}")

    page.on("console", console)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("dialog", lambda d: dialogs.append(d.message))


async def _sign_in(page: Any, email: str, password: str) -> None:
    await page.locator("#login-email").fill(email)
    await page.locator("#login-password").fill(password)
    await page.locator("#login-submit").click()


async def _literal_markup_only(page: Any) -> None:
    """No element came from data: the markup of names and hosts is text."""
    assert await page.locator("main img").count() == 0
    assert await page.locator("main script").count() == 0
    assert await page.locator("main b").count() == 0


async def test_the_dashboard_signs_in_through_the_gateway_and_goes_live_in_chromium(
    service_client: Callable[[web.Application], Awaitable[Client]],
    users_settings: UsersSettings,
    users_dsn: str,
    products_settings: ProductsSettings,
    web_settings: WebSettingsFactory,
    redis_namespace: str,
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
    gateway = await service_client(
        create_gateway_app(
            GatewaySettings(
                _env_file=None,  # type: ignore[call-arg]
                env="test",
                redis_namespace=redis_namespace,
                rate_limit_namespace=f"{redis_namespace}.gw-{uuid.uuid4().hex[:8]}",
                upstream_users=users_url,
                upstream_products=products_url,
                upstream_orders=CLOSED,
                upstream_web=str(dashboard.make_url("")).rstrip("/"),
                bus_transport="memory",
                health_interval=0.2,
                log_level="WARNING",
            ),
            transport=InMemoryTransport(),  # its own: the totals stay those of the services
        )
    )
    page_url = str(gateway.make_url("/dashboard"))
    admin = await _account(users_url, users_dsn, admin=True)
    customer = await _account(users_url, users_dsn, admin=False)

    stop = asyncio.Event()
    sent = 0
    orders, customers = _fake_orders(transport)
    await orders.start()
    load = asyncio.create_task(_load(users_url, products_url, stop))
    placing = asyncio.create_task(_place_orders(orders, customers, stop))
    problems: list[str] = []
    dialogs: list[str] = []
    requests: list[tuple[str, dict[str, str]]] = []
    login_shot = artifacts_dir() / "dashboard-login.png"
    screenshot = artifacts_dir() / "dashboard.png"
    try:
        async with playwright_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM)
            try:
                context = await browser.new_context(viewport={"width": 1440, "height": 1300})
                page = await context.new_page()
                _watch(page, problems, dialogs)

                async def record(request: Any) -> None:
                    requests.append((request.url, await request.all_headers()))

                page.on("request", record)
                response = await page.goto(page_url)
                assert response is not None
                assert response.status == 200
                assert await page.title() == "aioshop · live dashboard"
                assert await page.locator("#login-form").is_visible()
                assert not await page.locator("#dashboard").is_visible()
                assert await page.locator("#instances tbody tr[data-key]").count() == 0
                await page.screenshot(path=str(login_shot), full_page=True)

                error = page.locator("#login-error")
                await _sign_in(page, admin, "not-the-password")
                await wait_for(lambda: _text_is(error, "Wrong email or password."), within=10)
                await _sign_in(page, customer, "long-enough-pw")

                async def refused() -> bool:
                    return "metrics:read" in await error.inner_text()

                await wait_for(refused, within=10)
                assert await page.locator("#login-form").is_visible()
                await _sign_in(page, admin, "long-enough-pw")

                async def live() -> bool:
                    return await page.locator("#conn").inner_text() == "live"

                await wait_for(live, within=10)
                assert not await page.locator("#login-form").is_visible()
                assert await page.locator("#login-password").input_value() == ""

                seen: set[str] = set()

                async def rps_moves() -> bool:
                    seen.add(await page.locator("#total-rps").inner_text())
                    return len(seen - {"0.0"}) >= 3

                await wait_for(rps_moves, within=30, interval=0.25)

                async def instances_shown() -> bool:
                    rows = await page.locator("#instances tbody tr[data-key]").count()
                    return rows >= 4  # users, products, the dashboard and the evil one

                await wait_for(instances_shown, within=10)

                async def charts_filled() -> bool:
                    charts = page.locator("svg.chart-svg")
                    for n in range(await charts.count()):
                        if await charts.nth(n).locator("path.series").count() == 0:
                            return False
                    # On the request chart, a series of a service snapshotting every half
                    # second starts near the left edge: the history spans the whole time axis.
                    chart = charts.first
                    box = await chart.bounding_box()
                    if box is None:
                        return False
                    for d in await chart.locator("path.series").evaluate_all(
                        "paths => paths.map((p) => p.getAttribute('d'))"
                    ):
                        first_x = float(d[1:].split(",", 1)[0])
                        if d.count("L") >= 20 and first_x < 0.2 * box["width"]:
                            return True
                    return False

                await wait_for(charts_filled, within=40, interval=0.25)

                async def saga_shown() -> bool:
                    steps = await page.locator("#sagas .steps").all_inner_texts()
                    return any("reservation failed" in s and "rejected" in s for s in steps)

                await wait_for(saga_shown, within=10)
                # Each saga with a correlation id links to its trace view.
                links = await page.locator("#sagas td.mono a").evaluate_all(
                    "links => links.map((a) => a.getAttribute('href'))"
                )
                assert links, "no trace link in the sagas table"
                assert all(link.startswith("/dashboard/trace/") for link in links), links

                async def evil_shown_as_text() -> bool:
                    events = await page.locator("#events").inner_text()
                    instances = await page.locator("#instances").inner_text()
                    return EVIL_PRODUCT in events and EVIL_INSTANCE in instances

                await wait_for(evil_shown_as_text, within=10)
                await _literal_markup_only(page)
                await page.locator("#instances tbody tr[data-key]").last.hover()
                health = await page.locator("#instances .badge").all_inner_texts()
                assert set(health) <= {"up", "degraded"}, health
                await page.screenshot(path=str(screenshot), full_page=True)

                # The token is in the page's memory only: no storage, no cookie, no URL.
                stored = await page.evaluate(
                    "() => [localStorage.length, sessionStorage.length, document.cookie]"
                )
                assert stored == [0, 0, ""]
                assert await context.cookies() == []
                streams = [(u, h) for u, h in requests if "/dashboard/stream" in u]
                assert streams
                for url, headers in streams:
                    assert "?" not in url
                    assert headers.get("authorization", "").startswith("Bearer ")
                for url, _ in requests:
                    assert "token" not in url.lower()
                    assert "eyJ" not in url  # no JWT anywhere in a URL

                await page.locator("#logout").click()
                await wait_for(lambda: _text_is(error, "Signed out."), within=5)
                assert await page.locator("#login-form").is_visible()
                assert not await page.locator("#dashboard").is_visible()
            finally:
                await browser.close()
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            sent = await load
        await placing
    print(f"dashboard screenshots: {login_shot} {screenshot}")
    assert sent > 50
    assert problems == []
    assert dialogs == []
    assert screenshot.stat().st_size > 10_000
    assert login_shot.stat().st_size > 5_000


async def _text_is(locator: Any, expected: str) -> bool:
    return bool(await locator.inner_text() == expected)


async def test_a_public_dashboard_shows_no_host_name_or_id_in_chromium(
    service_client: Callable[[web.Application], Awaitable[Client]],
    web_settings: WebSettingsFactory,
) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    transport = InMemoryTransport()
    dashboard = await service_client(
        create_web_app(
            web_settings(dashboard_public=True, dashboard_push_interval=0.3), transport=transport
        )
    )
    stop = asyncio.Event()
    orders, customers = _fake_orders(transport)
    await orders.start()
    placing = asyncio.create_task(_place_orders(orders, customers, stop))
    problems: list[str] = []
    dialogs: list[str] = []
    screenshot = artifacts_dir() / "dashboard-public.png"
    try:
        async with playwright_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM)
            try:
                page = await browser.new_page(viewport={"width": 1440, "height": 1000})
                _watch(page, problems, dialogs)
                response = await page.goto(str(dashboard.make_url("/dashboard")))
                assert response is not None
                assert response.status == 200
                assert await page.locator("#login-form").count() == 0

                async def shown() -> bool:
                    conn = await page.locator("#conn").inner_text()
                    events = await page.locator("#events").inner_text()
                    instances = await page.locator("#instances").inner_text()
                    return conn == "live" and EVIL_PRODUCT in events and "evil" in instances

                await wait_for(shown, within=20, interval=0.25)
                await _literal_markup_only(page)
                text = await page.locator("body").inner_text()
                html = await page.content()
                for secret in (EVIL_HOST, EVIL_INSTANCE, "alert('host')", "onmouseover"):
                    assert secret not in text, secret
                    assert secret not in html, secret
                for order_id in customers:
                    assert order_id[:8] not in html
                await page.screenshot(path=str(screenshot), full_page=True)
            finally:
                await browser.close()
    finally:
        stop.set()
        await placing
    assert problems == []
    assert dialogs == []

"""The trace view in a real headless Chromium (Debian's, driven by Playwright): rendered by the
server for a request with a token, and by its script after the sign-in a bare link leads to; no
console error (a CSP violation is one), no markup from data; spans from a stand-in of Jaeger's
query API. Screenshots go to ``$AIOSHOP_ARTIFACTS`` (``trace.png``, ``trace-signed-in.png``,
``trace-spans.png``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.core.test_logfiles import entry, write
from tests.web.conftest import Client, issue, operator
from tests.web.test_browser import CHROMIUM, _watch, artifacts_dir
from tests.web.test_trace import (  # noqa: F401  # log_dir, trace_client: fixtures
    EVIL,
    FLOW,
    TRACE_ID,
    FakeArchive,
    log_dir,
    trace_client,
)
from tests.web.test_trace_spans import OTHER_IDS, Jaeger, jaeger  # noqa: F401  # jaeger: fixture

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}: apt-get install chromium"
    ),
]


@pytest.fixture(autouse=True)
def blockbuster() -> None:
    """Off for this module: Playwright's driver does file I/O in the loop, which is not ours."""


async def _no_markup_from_data(page: Any) -> None:
    assert await page.locator("main script").count() == 0
    text = await page.locator("#trace-timeline").inner_text()
    assert f"placing {EVIL}" in text


async def test_the_trace_page_in_a_browser(
    trace_client: Callable[..., Awaitable[Client]],  # noqa: F811  # the fixture imported above
) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    client = await trace_client(FakeArchive(FLOW))
    url = str(client.make_url("/dashboard/trace/flow-1"))
    problems: list[str] = []
    dialogs: list[str] = []
    shot = artifacts_dir() / "trace.png"
    signed_in_shot = artifacts_dir() / "trace-signed-in.png"
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            # With a token on the request: the server renders the trace.
            context = await browser.new_context(
                viewport={"width": 1280, "height": 700}, extra_http_headers=operator()
            )
            page = await context.new_page()
            _watch(page, problems, dialogs)
            response = await page.goto(url)
            assert response is not None
            assert response.status == 200
            await _no_markup_from_data(page)
            link = page.locator("#trace-spans a")
            assert await link.get_attribute("href") == f"http://jaeger.test:16686/trace/{TRACE_ID}"
            assert await page.locator("#trace-timeline tr").count() == 4
            await page.screenshot(path=str(shot), full_page=True)
            await context.close()

            # A bare link: the sign-in form, then the script reads the JSON with the token.
            context = await browser.new_context(viewport={"width": 1280, "height": 700})
            page = await context.new_page()
            _watch(page, problems, dialogs)
            token = issue().token

            async def login(route: Any) -> None:  # the gateway's sign-in, answered here
                await route.fulfill(json={"access_token": token, "token_type": "bearer"})

            await page.route("**/api/v1/auth/login", login)
            await page.goto(url)
            assert await page.locator("#login-form").is_visible()
            assert not await page.locator("#trace").is_visible()
            await page.locator("#login-email").fill("ops@example.com")
            await page.locator("#login-password").fill("long-enough-pw")
            await page.locator("#login-submit").click()
            await page.locator("#trace").wait_for(state="visible", timeout=10_000)
            await _no_markup_from_data(page)
            assert await page.locator("#trace-timeline tr").count() == 4
            assert "4 events" not in await page.locator("#trace-sources").inner_text()
            assert "2 events" in await page.locator("#trace-sources").inner_text()
            await page.screenshot(path=str(signed_in_shot), full_page=True)
        finally:
            await browser.close()
    assert problems == []
    assert dialogs == []
    print(f"trace screenshots: {shot} {signed_in_shot}")


async def test_the_signed_in_page_shows_spans_and_notes(
    trace_client: Callable[..., Awaitable[Client]],  # noqa: F811
    jaeger: Jaeger,  # noqa: F811
    log_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The script's rendering of spans (one failed, its message markup as text) and notes."""
    playwright_api = pytest.importorskip("playwright.async_api")
    unknown = OTHER_IDS[1]
    line = entry(3, "users", "a trace the store never had", cid="flow-1", trace_id=unknown)
    await asyncio.to_thread(write, log_dir / "users.log", line)
    monkeypatch.setenv("DASHBOARD_TRACE_API", jaeger.url())
    client = await trace_client(FakeArchive(FLOW))
    url = str(client.make_url("/dashboard/trace/flow-1"))
    problems: list[str] = []
    dialogs: list[str] = []
    shot = artifacts_dir() / "trace-spans.png"
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            _watch(page, problems, dialogs)
            token = issue().token

            async def login(route: Any) -> None:  # the gateway's sign-in, answered here
                await route.fulfill(json={"access_token": token, "token_type": "bearer"})

            await page.route("**/api/v1/auth/login", login)
            await page.goto(url)
            await page.locator("#login-email").fill("ops@example.com")
            await page.locator("#login-password").fill("long-enough-pw")
            await page.locator("#login-submit").click()
            await page.locator("#trace").wait_for(state="visible", timeout=10_000)
            await _no_markup_from_data(page)
            kinds = await page.locator("#trace-timeline tr td:nth-child(2)").all_inner_texts()
            assert kinds == ["event", "span", "INFO", "span", "span", "WARNING", "event", "INFO"]
            failed = page.locator("#trace-timeline tr.span.status-error td.detail")
            assert f"out of stock {EVIL}" in await failed.inner_text()
            assert (
                "3 spans (from the trace API)" in await page.locator("#trace-sources").inner_text()
            )
            notes = await page.locator("#trace-notes li").all_inner_texts()
            assert notes == [f"Trace {unknown} is not in the trace store (yet)."]
            statuses = await page.locator("#trace-spans .trace-status").all_inner_texts()
            assert statuses == ["3 spans · ok", "0 spans · not found"]
            await page.screenshot(path=str(shot), full_page=True)
        finally:
            await browser.close()
    assert problems == []
    assert dialogs == []
    print(f"trace screenshot: {shot}")

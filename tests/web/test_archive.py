"""``GET /api/v1/admin/events`` on the dashboard: who may read the archive, what it validates,
how it pages, and the subscriber wired to the dashboard's bus."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.bus import Bus
from core.migrate import drop_database
from core.testing import assert_problem, wait_for
from core.testing.plugin import scratch_database_url
from tests.web.conftest import Client, ClientFactory, bearer, envelope, issue, operator
from web.archive import ARCHIVE

PATH = "/api/v1/admin/events"


@pytest.fixture(scope="module")
def archive_dsn() -> Iterator[str]:
    """A database for this module's archives (made by the archive at first use)."""
    dsn = scratch_database_url(f"test_web_archive_{uuid.uuid4().hex[:8]}")
    yield dsn
    asyncio.run(drop_database(dsn))


@pytest.fixture
async def client(make_client: ClientFactory, archive_dsn: str) -> Client:
    """A dashboard (test environment) with its archive on the module's database."""
    return await make_client(archive_database_url=archive_dsn, archive_batch_delay=0.01)


async def _events(client: Client, query: str = "", **headers: str) -> Any:
    response = await client.get(f"{PATH}?{query}", headers=headers or operator())
    assert response.status == 200, await response.text()
    return await response.json()


async def test_reading_the_archive_needs_metrics_read(client: Client) -> None:
    await assert_problem(await client.get(PATH), 401)
    await assert_problem(await client.get(PATH, headers={"Authorization": "Bearer nope"}), 401)
    customer = bearer(issue(permissions=()))
    await assert_problem(await client.get(PATH, headers=customer), 403)
    page = await _events(client, "limit=1")
    assert set(page) == {"items", "next_cursor"}


async def test_the_archive_stays_closed_on_a_public_dashboard(make_client: ClientFactory) -> None:
    public = await make_client(dashboard_public=True, archive_database_url="postgresql://x/y")
    assert (await public.get("/dashboard/api/state")).status == 200
    await assert_problem(await public.get(PATH), 401)


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=ten",
        "since=yesterday",
        "since=2026-01-01T12:00:00",  # no time zone
        "cursor=not-a-cursor",
        "correlation_id=",
        "type=" + "x" * 256,
    ],
)
async def test_bad_parameters_are_422(client: Client, query: str) -> None:
    await assert_problem(await client.get(f"{PATH}?{query}", headers=operator()), 422)


async def test_published_events_are_archived_and_paged_oldest_first(
    client: Client, publisher: Bus
) -> None:
    flow = uuid.uuid4().hex
    start = datetime.now(UTC) - timedelta(seconds=1)
    sent = [envelope(f"order.step{n}", {"n": n}, correlation_id=flow) for n in range(5)]
    for item in sent:
        await publisher.publish_envelope(item)

    async def archived() -> bool:
        page = await client.app[ARCHIVE].query(correlation_id=flow)
        return len(page.items) == 5

    await wait_for(archived, within=10)

    seen: list[dict[str, Any]] = []
    query = f"correlation_id={flow}&limit=2"
    cursor = None
    while True:
        page = await _events(client, query + (f"&cursor={cursor}" if cursor else ""))
        assert len(page["items"]) <= 2
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [item.model_dump(mode="json") for item in sent]

    one = await _events(client, f"correlation_id={flow}&type=order.step3")
    assert [e["data"] for e in one["items"]] == [{"n": 3}]
    since = (start + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert (await _events(client, f"correlation_id={flow}&since={since}"))["items"] == []


async def test_without_an_archive_the_endpoint_says_so(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="web.archive"):
        client = await make_client()  # the in-memory bus, no archive database: the embedded mode
    assert "event archive disabled" in caplog.text
    assert client.app.get(ARCHIVE) is None
    await assert_problem(await client.get(PATH, headers=operator()), 503)

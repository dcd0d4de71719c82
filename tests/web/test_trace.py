"""The dashboard's trace view: one correlation id's events (the archive), log lines (the log
files) and trace ids on one timeline, as a page and as JSON; who may read it; escaping."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from core.archive.base import ArchivePage
from core.bus import Bus, InMemoryTransport
from core.logfiles import log_directory
from core.migrate import drop_database
from core.testing import assert_problem, wait_for
from core.testing.plugin import scratch_database_url
from tests.core.test_logfiles import entry, write
from tests.web.conftest import (
    Client,
    ClientFactory,
    WebSettingsFactory,
    bearer,
    envelope,
    issue,
    operator,
)
from web import create_web_app
from web.archive import ARCHIVE
from web.trace import TRACE

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
EVIL = "<script>alert(1)</script>"


class FakeArchive:
    """The archive's interface over a list (a test double of our own interface)."""

    def __init__(self, envelopes: Sequence[dict[str, Any]]) -> None:
        self.envelopes = list(envelopes)
        self.queries = 0

    async def store(self, envelopes: Sequence[Mapping[str, Any]]) -> int:
        self.envelopes.extend(dict(e) for e in envelopes)
        return len(envelopes)

    async def query(
        self,
        *,
        correlation_id: str | None = None,
        type: str | None = None,  # the interface's name
        since: datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
        data: Mapping[str, str | int | bool] | None = None,
    ) -> ArchivePage:
        self.queries += 1
        found = [
            e
            for e in self.envelopes
            if (correlation_id is None or e["correlation_id"] == correlation_id)
            and (type is None or e["type"] == type)
            and all(e["data"].get(k) == v for k, v in (data or {}).items())
        ]
        start = int(cursor or 0)
        rest = found[start : start + limit]
        more = start + limit < len(found)
        return ArchivePage(items=rest, next_cursor=str(start + limit) if more else None)

    async def purge(self, older_than: datetime) -> int:
        return 0

    async def close(self) -> None:
        pass


def archived(seconds: float, event_type: str, cid: str, **data: Any) -> dict[str, Any]:
    """An envelope as the archive returns it."""
    return {
        "id": str(uuid.uuid4()),
        "type": event_type,
        "version": 1,
        "occurred_at": (T0 + timedelta(seconds=seconds)).isoformat(),
        "correlation_id": cid,
        "causation_id": None,
        "source": "orders",
        "data": data,
    }


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    directory = log_directory(tmp_path)
    write(
        directory / "orders.log",
        entry(0.5, "orders", f"placing {EVIL}", cid="flow-1", trace_id=TRACE_ID),
        entry(2.5, "orders", "other flow", cid="flow-2"),
    )
    write(
        directory / "products-1.log",
        entry(1.5, "products-1", "reserved", cid="flow-1", level="WARNING", trace_id=TRACE_ID),
    )
    return directory


@pytest.fixture
def trace_client(
    service_client: Callable[[web.Application], Awaitable[Client]],
    web_settings: WebSettingsFactory,
    transport: InMemoryTransport,
    log_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., Awaitable[Client]]:
    """``await trace_client(archive, **settings)``: a dashboard reading ``log_dir`` and, unless
    ``None``, the given archive."""

    async def factory(archive: FakeArchive | None, **overrides: Any) -> Client:
        monkeypatch.setenv("DASHBOARD_LOG_DIR", str(log_dir))
        monkeypatch.setenv("DASHBOARD_TRACE_URL", "http://jaeger.test:16686/trace/{trace_id}")
        app = create_web_app(web_settings(**overrides), transport=transport)
        if archive is not None:
            app[ARCHIVE] = archive
        return await service_client(app)

    return factory


FLOW = [
    archived(0, "order.placed", "flow-1", order_id="o-1", note=EVIL),
    archived(2, "inventory.reserved", "flow-1", order_id="o-1"),
    archived(3, "order.placed", "flow-2", order_id="o-2"),
]


async def test_a_trace_puts_events_and_log_lines_on_one_timeline(
    trace_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await trace_client(FakeArchive(FLOW))
    response = await client.get("/dashboard/api/trace/flow-1", headers=operator())
    assert response.status == 200, await response.text()
    body = await response.json()
    assert (body["archive"], body["logs"], body["truncated"]) == ("ok", "ok", False)
    kinds = [(item["kind"], item.get("type") or item.get("message")) for item in body["timeline"]]
    assert kinds == [
        ("event", "order.placed"),
        ("log", f"placing {EVIL}"),
        ("log", "reserved"),
        ("event", "inventory.reserved"),
    ]
    (span,) = body["spans"]
    assert span == {
        "trace_id": TRACE_ID,
        "processes": ["orders", "products-1"],
        "url": f"http://jaeger.test:16686/trace/{TRACE_ID}",
    }


async def test_the_page_escapes_and_links_the_trace(
    trace_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await trace_client(FakeArchive(FLOW))
    response = await client.get("/dashboard/trace/flow-1", headers=operator())
    assert response.status == 200
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    html = await response.text()
    assert EVIL not in html
    assert "placing &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert f'href="http://jaeger.test:16686/trace/{TRACE_ID}"' in html
    assert "inventory.reserved" in html
    assert "other flow" not in html
    assert "<script>" not in html.replace('<script src="/dashboard/static/trace.js" defer>', "")


async def test_an_order_id_finds_its_correlation_id(
    trace_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await trace_client(FakeArchive(FLOW))
    body = await (await client.get("/dashboard/api/trace?order_id=o-1", headers=operator())).json()
    assert (body["correlation_id"], body["order_id"]) == ("flow-1", "o-1")
    missing = await client.get("/dashboard/api/trace?order_id=o-9", headers=operator())
    await assert_problem(missing, 404)


async def test_a_recent_order_is_found_among_many_in_one_query(
    trace_client: Callable[..., Awaitable[Client]],
) -> None:
    """Past ten thousand orders in the archive, the newest is still found, by one query."""
    older = [archived(n, "order.placed", f"old-{n}", order_id=f"o-{n}") for n in range(10_001)]
    archive = FakeArchive([*older, archived(20_000, "order.placed", "flow-9", order_id="o-new")])
    client = await trace_client(archive)
    response = await client.get("/dashboard/api/trace?order_id=o-new", headers=operator())
    assert response.status == 200, await response.text()
    assert (await response.json())["correlation_id"] == "flow-9"
    assert archive.queries == 2  # the order's correlation id, then its events


async def test_without_an_archive_the_view_says_so(
    trace_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await trace_client(None)
    body = await (await client.get("/dashboard/api/trace/flow-1", headers=operator())).json()
    assert body["archive"] == "none"
    assert [item["kind"] for item in body["timeline"]] == ["log", "log"]
    html = await (await client.get("/dashboard/trace/flow-1", headers=operator())).text()
    assert "no archive" in html


async def test_a_trace_needs_metrics_read_even_on_a_public_dashboard(
    trace_client: Callable[..., Awaitable[Client]],
) -> None:
    for public in (False, True):
        client = await trace_client(FakeArchive(FLOW), dashboard_public=public)
        await assert_problem(await client.get("/dashboard/api/trace/flow-1"), 401)
        customer = bearer(issue(permissions=()))
        await assert_problem(await client.get("/dashboard/api/trace/flow-1", headers=customer), 403)
        # A link carries no token: the page comes without data, with a sign-in form.
        page = await client.get("/dashboard/trace/flow-1")
        assert page.status == 200
        html = await page.text()
        assert 'id="login-form"' in html
        assert "placing" not in html
        assert 'data-api="/dashboard/api/trace/flow-1"' in html
        await assert_problem(await client.get("/dashboard/trace/flow-1", headers=customer), 403)


@pytest.mark.parametrize(
    "path",
    ["/dashboard/api/trace/bad%20id", "/dashboard/api/trace", "/dashboard/api/trace?order_id=%3C"],
)
async def test_bad_ids_are_400(trace_client: Callable[..., Awaitable[Client]], path: str) -> None:
    client = await trace_client(None)
    await assert_problem(await client.get(path, headers=operator()), 400)


@pytest.fixture(scope="module")
def archive_dsn() -> Iterator[str]:
    """A database for this module's archive (made by the archive at first use)."""
    dsn = scratch_database_url(f"test_web_trace_{uuid.uuid4().hex[:8]}")
    yield dsn
    asyncio.run(drop_database(dsn))


async def test_the_real_archive_feeds_the_trace(
    make_client: ClientFactory,
    publisher: Bus,
    archive_dsn: str,
    log_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DASHBOARD_LOG_DIR", str(log_dir))
    client = await make_client(archive_database_url=archive_dsn, archive_batch_delay=0.01)
    assert client.app[TRACE].settings.dashboard_log_dir == log_dir
    flow = uuid.uuid4().hex
    order = str(uuid.uuid4())
    await publisher.publish_envelope(
        envelope("order.placed", {"order_id": order}, correlation_id=flow)
    )
    await publisher.publish_envelope(
        envelope("order.confirmed", {"order_id": order}, correlation_id=flow)
    )
    await asyncio.to_thread(
        write,
        log_dir / "orders.log",
        json.dumps(
            {
                "ts": datetime.now(UTC).isoformat(),
                "level": "INFO",
                "message": "confirmed",
                "process": "orders",
                "correlation_id": flow,
            }
        )
        + "\n",
    )

    async def both() -> Any:
        response = await client.get(f"/dashboard/api/trace?order_id={order}", headers=operator())
        body = await response.json()
        return len(body["timeline"]) == 3 and body

    body = await wait_for(both, within=10)
    assert body["correlation_id"] == flow
    assert [item.get("type") or item["message"] for item in body["timeline"]] == [
        "order.placed",
        "order.confirmed",
        "confirmed",
    ]

"""The trace view's spans, read from a trace store's query API: a stand-in of Jaeger's HTTP query
API (``GET /api/traces/{trace_id}``, its JSON as Jaeger 1.x answers it for spans exported over
OTLP) serves them; they join the events and log lines on the timeline, in time order; a trace
API that is down, slow or confused leaves the view without them and with a note; the setting is
checked."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer, unused_port
from pydantic import ValidationError

from tests.core.test_logfiles import entry, write
from tests.web.conftest import Client, operator
from tests.web.test_trace import (  # noqa: F401  # log_dir, trace_client: fixtures
    EVIL,
    FLOW,
    T0,
    TRACE_ID,
    FakeArchive,
    log_dir,
    trace_client,
)
from web.trace import TraceSettings
from web.trace_spans import jaeger_spans

OTHER_IDS = ["0af7651916cd43dd8448eb211c80319c", "5b8efff798038103d269b633813fc60c"]


def _micros(seconds: float) -> int:
    return int((T0 + timedelta(seconds=seconds)).timestamp() * 1_000_000)


def _tag(key: str, value: Any) -> dict[str, Any]:
    kind = {bool: "bool", int: "int64", float: "float64"}.get(type(value), "string")
    return {"key": key, "type": kind, "value": value}


def _span(
    span_id: str, process: str, operation: str, second: float, micros: int, *tags: dict[str, Any]
) -> dict[str, Any]:
    return {
        "traceID": TRACE_ID,
        "spanID": span_id,
        "operationName": operation,
        "references": [{"refType": "CHILD_OF", "traceID": TRACE_ID, "spanID": "a1b2c3d4e5f60718"}],
        "startTime": _micros(second),
        "duration": micros,
        "tags": [_tag("internal.span.format", "otlp"), *tags],
        "logs": [],
        "processID": process,
        "warnings": None,
    }


def jaeger_trace(trace_id: str = TRACE_ID) -> dict[str, Any]:
    """What Jaeger's query API answers for the placed order of ``FLOW``: three services' spans,
    not in time order (Jaeger does not sort them), one of them failed."""
    spans = [
        _span(
            "c3d4e5f607182930",
            "p3",
            "process order.placed",
            1.0,
            41_250,
            _tag("span.kind", "consumer"),
            _tag("messaging.system", "rabbitmq"),
            _tag("otel.status_code", "ERROR"),
            _tag("otel.status_description", f"out of stock {EVIL}"),
            _tag("error", True),
        ),
        _span(
            "a1b2c3d4e5f60718",
            "p1",
            "POST /api/v1/orders",
            0.2,
            1_003_500,
            _tag("span.kind", "server"),
            _tag("http.request.method", "POST"),
            _tag("http.response.status_code", 201),
        ),
        _span(
            "b2c3d4e5f6071829",
            "p2",
            "publish order.placed",
            0.6,
            2_100,
            _tag("span.kind", "producer"),
            _tag("otel.status_code", "OK"),
        ),
    ]
    for span in spans:
        span["traceID"] = trace_id
    processes = {
        key: {
            "serviceName": service,
            "tags": [
                _tag("service.instance.id", instance),
                _tag("telemetry.sdk.language", "python"),
            ],
        }
        for key, service, instance in (
            ("p1", "gateway", "gateway"),
            ("p2", "orders", "orders"),
            ("p3", "products", "products-1"),
        )
    }
    return {"traceID": trace_id, "spans": spans, "processes": processes, "warnings": None}


class Jaeger:
    """A stand-in of Jaeger's query API, on a real port: the traces it holds, the trace ids it
    was asked for; ``hold``: answers wait for ``release`` (a slow store); ``together``: answers
    wait until that many requests are in (they must come in parallel)."""

    def __init__(self, traces: dict[str, dict[str, Any]], prefix: str = "") -> None:
        self.traces = traces
        self.asked: list[str] = []
        self.hold = False
        self.together = 0
        self.garbage = False
        self.release = asyncio.Event()
        self.arrived = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get(prefix + "/api/traces/{trace_id}", self.trace)
        self.server = TestServer(self.app)

    async def trace(self, request: web.Request) -> web.Response:
        trace_id = request.match_info["trace_id"]
        self.asked.append(trace_id)
        if self.hold:
            await self.release.wait()
        if self.together:
            if len(self.asked) >= self.together:
                self.arrived.set()
            await self.arrived.wait()
        if self.garbage:
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
        if trace_id not in self.traces:
            errors = [{"code": 404, "msg": "trace not found"}]
            body = {"data": None, "total": 0, "limit": 0, "offset": 0, "errors": errors}
            return web.json_response(body, status=404)
        body = {"data": [self.traces[trace_id]], "total": 0, "limit": 0, "offset": 0}
        return web.json_response({**body, "errors": None})

    def url(self, prefix: str = "") -> str:
        return str(self.server.make_url(prefix)).rstrip("/")


@pytest.fixture
async def jaeger() -> AsyncIterator[Jaeger]:
    store = Jaeger({TRACE_ID: jaeger_trace()})
    await store.server.start_server()
    yield store
    store.release.set()
    store.arrived.set()
    await store.server.close()


Factory = Callable[..., Awaitable[Client]]


async def _client(
    factory: Factory, monkeypatch: pytest.MonkeyPatch, api: str, **env: str
) -> Client:
    monkeypatch.setenv("DASHBOARD_TRACE_API", api)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return await factory(FakeArchive(FLOW))


async def _trace(client: Client) -> dict[str, Any]:
    response = await client.get("/dashboard/api/trace/flow-1", headers=operator())
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def _what(item: dict[str, Any]) -> tuple[str, str]:
    if item["kind"] == "span":
        return "span", item["operation"]
    return item["kind"], item.get("type") or item["message"]


async def test_spans_join_events_and_log_lines_in_time_order(
    trace_client: Factory,  # noqa: F811  # the fixture imported above
    jaeger: Jaeger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = await _client(trace_client, monkeypatch, jaeger.url() + "/")
    body = await _trace(client)
    assert jaeger.asked == [TRACE_ID]
    assert [_what(item) for item in body["timeline"]] == [
        ("event", "order.placed"),
        ("span", "POST /api/v1/orders"),
        ("log", f"placing {EVIL}"),
        ("span", "publish order.placed"),
        ("span", "process order.placed"),
        ("log", "reserved"),
        ("event", "inventory.reserved"),
    ]
    spans = [item for item in body["timeline"] if item["kind"] == "span"]
    assert [(s["service"], s["span_kind"], s["status"], s["duration_ms"]) for s in spans] == [
        ("gateway", "server", "unset", 1003.5),
        ("orders", "producer", "ok", 2.1),
        ("products", "consumer", "error", 41.25),
    ]
    assert spans[2]["message"] == f"out of stock {EVIL}"
    assert spans[0]["at"] == (T0 + timedelta(seconds=0.2)).isoformat()
    assert (body["trace_api"], body["notes"], body["truncated"]) == ("ok", [], False)
    (listed,) = body["spans"]
    assert (listed["trace_id"], listed["status"], listed["span_count"]) == (TRACE_ID, "ok", 3)
    assert listed["url"] == f"http://jaeger.test:16686/trace/{TRACE_ID}"


async def test_the_page_shows_the_spans_escaped_in_time_order(
    trace_client: Factory,  # noqa: F811
    jaeger: Jaeger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = await _client(trace_client, monkeypatch, jaeger.url())
    response = await client.get("/dashboard/trace/flow-1", headers=operator())
    assert response.status == 200
    html = await response.text()
    assert EVIL not in html
    assert "out of stock &lt;script&gt;alert(1)&lt;/script&gt;" in html
    rows = re.findall(r'<tr class="(\w+)[^"]*"><td class="mono" title="([^"]+)"', html)
    assert [kind for kind, _ in rows] == ["event", "span", "log", "span", "span", "log", "event"]
    assert [at for _, at in rows] == sorted(at for _, at in rows)
    assert 'class="span status-error"' in html
    assert "3 spans (from the trace API)" in html
    assert "3 spans · ok" in html
    assert "<script>" not in html.replace('<script src="/dashboard/static/trace.js" defer>', "")


async def test_a_trace_api_behind_a_path_prefix(
    trace_client: Factory,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = Jaeger({TRACE_ID: jaeger_trace()}, prefix="/jaeger")
    await store.server.start_server()
    try:
        client = await _client(trace_client, monkeypatch, store.url("/jaeger"))
        body = await _trace(client)
    finally:
        await store.server.close()
    assert store.asked == [TRACE_ID]
    assert sum(item["kind"] == "span" for item in body["timeline"]) == 3


async def test_a_trace_api_that_is_down_gives_the_view_and_a_note(
    trace_client: Factory,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = await _client(trace_client, monkeypatch, f"http://127.0.0.1:{unused_port()}")
    body = await _trace(client)
    assert [item["kind"] for item in body["timeline"]] == ["event", "log", "log", "event"]
    assert body["trace_api"] == "unavailable"
    assert body["spans"][0]["status"] == "failed"
    (note,) = body["notes"]
    assert note.startswith(f"The spans of trace {TRACE_ID} could not be read (Client")
    html = await (await client.get("/dashboard/trace/flow-1", headers=operator())).text()
    assert "the trace API cannot be reached" in html
    assert "could not be read" in html


async def test_a_slow_trace_api_is_given_up_on(
    trace_client: Factory,  # noqa: F811
    jaeger: Jaeger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jaeger.hold = True
    client = await _client(
        trace_client, monkeypatch, jaeger.url(), DASHBOARD_TRACE_API_TIMEOUT="0.2"
    )
    body = await _trace(client)
    assert jaeger.asked == [TRACE_ID]
    assert not [item for item in body["timeline"] if item["kind"] == "span"]
    assert body["notes"] == [
        f"The spans of trace {TRACE_ID} could not be read (no answer within 0.2 s)."
    ]
    assert body["trace_api"] == "unavailable"


async def test_an_unknown_trace_or_a_confused_answer_is_a_note(
    trace_client: Factory,  # noqa: F811
    jaeger: Jaeger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jaeger.traces.clear()
    client = await _client(trace_client, monkeypatch, jaeger.url())
    body = await _trace(client)
    assert (body["trace_api"], body["spans"][0]["status"]) == ("ok", "not found")
    assert body["notes"] == [f"Trace {TRACE_ID} is not in the trace store (yet)."]
    jaeger.garbage = True
    body = await _trace(client)
    assert (body["trace_api"], body["spans"][0]["status"]) == ("unavailable", "failed")
    assert "could not be read" in body["notes"][0]


async def test_at_most_n_traces_are_read_and_in_parallel(
    trace_client: Factory,  # noqa: F811
    jaeger: Jaeger,
    log_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = [
        entry(3 + n, "users", f"line {n}", cid="flow-1", trace_id=t)
        for n, t in enumerate(OTHER_IDS)
    ]
    await asyncio.to_thread(write, log_dir / "users.log", *lines)
    jaeger.traces[OTHER_IDS[0]] = jaeger_trace(OTHER_IDS[0])
    # Each answer waits for the other request: read one after the other, both would time out.
    jaeger.together = 2
    client = await _client(trace_client, monkeypatch, jaeger.url(), DASHBOARD_TRACE_API_TRACES="2")
    body = await _trace(client)
    assert sorted(jaeger.asked) == sorted([TRACE_ID, OTHER_IDS[0]])
    assert [(s["trace_id"], s["status"], s["span_count"]) for s in body["spans"]] == [
        (TRACE_ID, "ok", 3),
        (OTHER_IDS[0], "ok", 3),
        (OTHER_IDS[1], "not fetched", 0),
    ]
    assert body["notes"] == ["1 more traces not fetched (at most 2): see the trace UI."]
    at = [item["at"] for item in body["timeline"]]
    assert len(at) == 4 + 2 + 6
    assert at == sorted(at)


async def test_without_the_setting_no_span_is_read(
    trace_client: Factory,  # noqa: F811
    jaeger: Jaeger,
) -> None:
    client = await trace_client(FakeArchive(FLOW))
    body = await _trace(client)
    assert jaeger.asked == []
    assert (body["trace_api"], body["notes"]) == ("none", [])
    assert "status" not in body["spans"][0]
    assert {item["kind"] for item in body["timeline"]} == {"event", "log"}


@pytest.mark.parametrize(
    "value",
    [
        "ftp://jaeger:16686",
        "jaeger:16686",
        "javascript:alert(1)",
        "http://",
        "http://jaeger:16686/?service=x",
        "http://jaeger:16686/#top",
        "http://admin:secret@jaeger:16686",
    ],
)
def test_a_trace_api_that_is_not_an_http_address_is_refused(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError, match="DASHBOARD_TRACE_API"):
        TraceSettings(_env_file=None, dashboard_trace_api=value)
    monkeypatch.setenv("DASHBOARD_TRACE_API", value)
    with pytest.raises(ValidationError):
        TraceSettings(_env_file=None)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("dashboard_trace_api_timeout", 0),
        ("dashboard_trace_api_traces", 0),
        ("dashboard_trace_api_traces", 51),
        ("dashboard_trace_spans", 0),
    ],
)
def test_bounds_are_checked(name: str, value: int) -> None:
    with pytest.raises(ValidationError):
        TraceSettings(_env_file=None, **{name: value})


def test_good_addresses_are_kept_without_their_trailing_slash() -> None:
    for given, kept in [
        ("http://jaeger:16686/", "http://jaeger:16686"),
        ("https://tracing.example/jaeger", "https://tracing.example/jaeger"),
        ("", None),
    ]:
        assert TraceSettings(_env_file=None, dashboard_trace_api=given).dashboard_trace_api == kept


def test_what_is_not_a_span_is_left_out() -> None:
    trace = jaeger_trace()
    trace["spans"] += [
        {"operationName": "no times", "processID": "p1"},
        {**trace["spans"][0], "startTime": "1", "operationName": "a string"},
        "not a span",
    ]
    spans = jaeger_spans({"data": [trace, None]})
    assert [s["operation"] for s in spans] == [
        "POST /api/v1/orders",
        "publish order.placed",
        "process order.placed",
    ]
    assert all(isinstance(datetime.fromisoformat(s["at"]), datetime) for s in spans)
    with pytest.raises(ValueError, match="no data"):
        jaeger_spans({"data": None, "errors": [{"code": 404, "msg": "trace not found"}]})

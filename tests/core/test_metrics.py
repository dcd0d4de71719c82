"""/metrics: request counts and latency by route template, in-flight gauge, process metrics."""

from typing import Annotated

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

import core
from core import Path, Router
from core.metrics import LATENCY_BUCKETS
from core.settings import BaseServiceSettings
from tests.core.conftest import ClientFactory

pytestmark = pytest.mark.unit


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def _value(
    samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str
) -> float | None:
    for sample_name, sample_labels, value in samples:
        if sample_name == name and sample_labels == labels:
            return value
    return None


async def test_requests_are_counted_by_route_template_and_status(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/items/{id}")
    async def get_item(id: Annotated[int, Path()]) -> dict[str, int]:
        return {"id": id}

    client = await service_client(core.create_app("t", settings, routers=[router]))
    for path, status in [("/items/1", 200), ("/items/2", 200), ("/items/x", 422), ("/nope", 404)]:
        resp = await client.get(path)
        assert resp.status == status
        await resp.read()

    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    samples = _samples(text)

    route = "/items/{id}"
    assert _value(samples, "http_requests_total", method="GET", route=route, status="200") == 2
    assert _value(samples, "http_requests_total", method="GET", route=route, status="422") == 1
    assert (
        _value(samples, "http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    )
    assert 'route="/items/1"' not in text
    assert "/nope" not in text

    buckets = {
        labels["le"]: value
        for name, labels, value in samples
        if name == "http_request_duration_seconds_bucket"
        and labels["route"] == route
        and labels["status"] == "200"
    }
    assert set(buckets) == {*(str(float(b)) for b in LATENCY_BUCKETS), "+Inf"}
    assert buckets["+Inf"] == 2
    ordered = [buckets[str(float(b))] for b in LATENCY_BUCKETS]
    assert ordered == sorted(ordered)
    labels = {"method": "GET", "route": route, "status": "200"}
    assert _value(samples, "http_request_duration_seconds_count", **labels) == 2
    assert (_value(samples, "http_request_duration_seconds_sum", **labels) or 0) > 0

    # The /metrics request itself is the one in flight.
    assert _value(samples, "http_requests_in_flight") == 1
    rss = _value(samples, "process_resident_memory_bytes")
    assert rss is not None
    assert rss > 1_000_000


async def test_each_app_has_its_own_registry(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    first = await service_client(core.create_app("a", settings))
    second = await service_client(core.create_app("b", settings))
    for _ in range(3):
        await (await first.get("/healthz")).read()
    samples = _samples(await (await second.get("/metrics")).text())
    assert (
        _value(samples, "http_requests_total", method="GET", route="/healthz", status="200") is None
    )
    samples = _samples(await (await first.get("/metrics")).text())
    assert _value(samples, "http_requests_total", method="GET", route="/healthz", status="200") == 3


async def test_a_raised_redirect_is_counted_with_its_own_status(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/old")
    async def old() -> None:
        raise web.HTTPFound("/new")

    client = await service_client(core.create_app("t", settings, routers=[router]))
    resp = await client.get("/old", allow_redirects=False)
    assert resp.status == 302
    samples = _samples(await (await client.get("/metrics")).text())
    assert _value(samples, "http_requests_total", method="GET", route="/old", status="302") == 1
    assert _value(samples, "http_requests_total", method="GET", route="/old", status="500") is None


async def test_streams_are_timed_apart_from_requests(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    """An event stream or a WebSocket is counted as a request, but how long it stayed open goes
    to its own histogram, never into the request latency or the dashboard's window."""

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: hello\n\n")
        return response

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("hello")
        await ws.close()
        return ws

    async def plain(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = core.create_app("t", settings)
    app.router.add_get("/events", events)
    app.router.add_get("/socket", socket)
    app.router.add_get("/plain", plain)
    client = await service_client(app)
    resp = await client.get("/events")
    assert await resp.read() == b"data: hello\n\n"
    async with client.ws_connect("/socket") as ws:
        assert (await ws.receive_str()) == "hello"
    assert (await client.get("/plain")).status == 200

    samples = _samples(await (await client.get("/metrics")).text())
    for route, status in (("/events", "200"), ("/socket", "101")):
        assert _value(samples, "http_requests_total", method="GET", route=route, status=status) == 1
        assert _value(samples, "http_stream_duration_seconds_count", method="GET", route=route) == 1
        assert not [
            s
            for s in samples
            if s[0].startswith("http_request_duration") and s[1].get("route") == route
        ]
    assert (
        _value(
            samples,
            "http_request_duration_seconds_count",
            method="GET",
            route="/plain",
            status="200",
        )
        == 1
    )
    assert app[core.METRICS].window.take().count == 2  # /plain and the /metrics read: no stream

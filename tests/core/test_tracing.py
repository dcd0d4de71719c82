"""Tracing in core: off and absent without configuration, server spans continuing W3C trace
context, the trace id in log lines, the bus's producer and consumer spans (in-memory bus)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import core
from core import tracing
from core.bus import Bus, Event, Incoming, InMemoryTransport, Message
from core.logging import configure_logging, direct_output, flush_logging
from core.middleware.tracing import tracing_middlewares
from core.snapshot import MetricsSnapshot
from core.testing import SpanRecorder, wait_for
from tests.core.conftest import ClientFactory, SettingsFactory

OTEL_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_SDK_DISABLED",
    "AIOSHOP_PROCESS",
)
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"

log = logging.getLogger("tests.tracing")


class Pinged(Event):
    """A test event."""

    event_type = "test.pinged"

    n: int


@pytest.fixture
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OpenTelemetry variable set; tracing as off as a fresh process has it, and after."""
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    tracing.uninstall()
    yield
    tracing.uninstall()


@pytest.fixture(params=["json"])
def log_stream(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """Every log line into a stream, in the format the test's parameter names (before the event
    loop runs: configuring reads settings); pytest's handlers are put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("things", fmt=request.param, stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


def _app(make_settings: SettingsFactory) -> web.Application:
    app = core.create_app("things", make_settings())

    async def thing(request: web.Request) -> web.Response:
        log.warning("handling thing %s", request.match_info["id"])
        return web.json_response({"ok": True})

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"broken": True}, status=503)

    app.router.add_get("/things/{id}", thing)
    app.router.add_get("/broken", broken)
    return app


def _is_tracing(middleware: Any) -> bool:
    return getattr(middleware, "__module__", "") == "core.middleware.tracing"


@pytest.mark.unit
@pytest.mark.usefixtures("no_otel_env")
def test_off_without_an_endpoint_no_middleware_and_no_spans(
    make_settings: SettingsFactory,
) -> None:
    app = _app(make_settings)
    assert not any(_is_tracing(m) for m in app.middlewares)
    assert not tracing.enabled()
    assert tracing.current_ids() is None
    assert tracing.trace_headers() is None
    headers: dict[str, str] = {}
    with tracing.client_span("GET", "http://x/y", headers, service="a", peer="b") as span:
        assert span is None
    assert headers == {}  # nothing injected


@pytest.mark.unit
@pytest.mark.usefixtures("no_otel_env")
def test_on_from_the_environment_named_after_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("AIOSHOP_PROCESS", "products-2")
    assert tracing_middlewares("products")  # configured by the first call
    provider = tracing._state.provider
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "products-2"
    assert provider.resource.attributes["service.instance.id"] == "products-2"
    tracing.uninstall()

    monkeypatch.setenv("OTEL_SERVICE_NAME", "shop")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.configure("products")
    tracing.uninstall()
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    assert tracing.configure("products")
    provider = tracing._state.provider
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "shop"


@pytest.mark.unit
@pytest.mark.usefixtures("no_otel_env")
def test_an_empty_endpoint_is_off() -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", " ")
        assert not tracing.configure("users")


async def test_a_server_span_continues_the_callers_trace_and_logs_carry_it(
    span_recorder: SpanRecorder,
    make_settings: SettingsFactory,
    service_client: ClientFactory,
    log_stream: io.StringIO,
) -> None:
    client = await service_client(_app(make_settings))
    response = await client.get(
        "/things/7", headers={"traceparent": TRACEPARENT, "tracestate": "shop=1"}
    )
    assert response.status == 200
    (span,) = span_recorder.of_kind(SpanKind.SERVER)
    assert span.name == "GET /things/{id}"
    assert span.context is not None
    assert span.parent is not None
    assert f"{span.context.trace_id:032x}" == PARENT_TRACE
    assert f"{span.parent.span_id:016x}" == PARENT_SPAN
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["http.route"] == "/things/{id}"
    assert span.attributes[tracing.SERVICE_ATTRIBUTE] == "things"
    assert span.context.trace_state.get("shop") == "1"

    lines = [orjson.loads(line) for line in log_stream.getvalue().splitlines()]
    mine = [line for line in lines if line["message"] == "handling thing 7"]
    assert mine, lines
    assert mine[0]["trace_id"] == PARENT_TRACE
    assert mine[0]["span_id"] == f"{span.context.span_id:016x}"
    assert mine[0]["correlation_id"] == response.headers["X-Correlation-ID"]
    access = [line for line in lines if line["logger"] == "core.access"]
    assert access
    assert access[0]["trace_id"] == PARENT_TRACE


async def test_a_malformed_traceparent_starts_a_new_trace(
    span_recorder: SpanRecorder, make_settings: SettingsFactory, service_client: ClientFactory
) -> None:
    client = await service_client(_app(make_settings))
    for bad in ("garbage", f"00-{'0' * 32}-{PARENT_SPAN}-01", "00-xyz-abc-01", "ff-" + "a" * 60):
        response = await client.get("/things/1", headers={"traceparent": bad})
        assert response.status == 200
    spans = span_recorder.of_kind(SpanKind.SERVER)
    assert len(spans) == 4
    assert all(span.parent is None for span in spans)
    assert len({span.context.trace_id for span in spans if span.context}) == 4


async def test_a_5xx_marks_the_server_span_failed(
    span_recorder: SpanRecorder, make_settings: SettingsFactory, service_client: ClientFactory
) -> None:
    client = await service_client(_app(make_settings))
    assert (await client.get("/broken")).status == 503
    assert (await client.get("/nowhere")).status == 404
    broken, missing = span_recorder.of_kind(SpanKind.SERVER)
    assert broken.status.status_code is StatusCode.ERROR
    assert missing.status.status_code is StatusCode.UNSET
    assert missing.name == "GET <unmatched>"


@pytest.mark.unit
@pytest.mark.parametrize("log_stream", ["text"], indirect=True)
def test_text_lines_carry_the_trace_only_while_a_span_records(
    span_recorder: SpanRecorder, log_stream: io.StringIO
) -> None:
    log.warning("outside")
    tracer = tracing.tracer()
    assert tracer is not None
    with tracer.start_as_current_span("work") as span:
        log.warning("inside")
    outside, inside = log_stream.getvalue().splitlines()
    assert "trace=" not in outside
    assert inside.endswith(f" trace={span.get_span_context().trace_id:032x}")


async def _bus_pair(transport: InMemoryTransport) -> tuple[Bus, Bus, list[Message]]:
    producer, consumer = Bus(transport, source="producer"), Bus(transport, source="consumer")
    received: list[Message] = []

    async def handler(message: Message) -> None:
        received.append(message)

    consumer.subscribe("test.*", handler, events=[Pinged])
    await consumer.start()
    await producer.start()
    return producer, consumer, received


def _one(spans: list[ReadableSpan]) -> ReadableSpan:
    assert len(spans) == 1, spans
    return spans[0]


async def test_a_publish_in_a_trace_is_continued_by_the_consumer(
    span_recorder: SpanRecorder,
) -> None:
    transport = InMemoryTransport()
    producer, consumer, received = await _bus_pair(transport)
    tracer = tracing.tracer()
    assert tracer is not None
    try:
        with tracer.start_as_current_span("request") as request_span:
            await producer.publish(Pinged(n=1))
        await producer.publish(Pinged(n=2))  # no trace around it: none started

        async def both() -> bool:
            return len(received) == 2 and len(span_recorder.of_kind(SpanKind.CONSUMER)) == 1

        await wait_for(both)
    finally:
        await producer.stop()
        await consumer.stop()
    trace_id = request_span.get_span_context().trace_id
    publish = _one(span_recorder.of_kind(SpanKind.PRODUCER))
    process = _one(span_recorder.of_kind(SpanKind.CONSUMER))
    assert publish.name == "publish test.pinged"
    assert process.name == "process test.pinged"
    assert publish.context is not None
    assert process.context is not None
    assert process.parent is not None
    assert publish.parent is not None
    assert publish.context.trace_id == process.context.trace_id == trace_id
    assert publish.parent.span_id == request_span.get_span_context().span_id
    assert process.parent.span_id == publish.context.span_id
    assert process.attributes is not None
    assert process.attributes["messaging.system"] == "memory"
    assert process.attributes[tracing.SERVICE_ATTRIBUTE] == "consumer"


async def test_the_metrics_snapshot_is_never_traced(span_recorder: SpanRecorder) -> None:
    transport = InMemoryTransport()
    bus = Bus(transport, source="things")
    await bus.start()
    tracer = tracing.tracer()
    assert tracer is not None
    try:
        envelope = bus.envelope(Pinged(n=1)).model_copy(update={"type": MetricsSnapshot.event_type})
        with tracer.start_as_current_span("request"):
            await bus.publish_envelope(envelope)
    finally:
        await bus.stop()
    assert span_recorder.of_kind(SpanKind.PRODUCER) == []


async def test_stored_headers_are_passed_on_even_where_tracing_is_off(
    no_otel_env: None,
) -> None:
    transport = InMemoryTransport()
    await transport.start()
    got: list[Incoming] = []

    async def handler(incoming: Incoming) -> None:
        got.append(incoming)

    await transport.consume("test-tracing-off", ["test.*"], handler)
    bus = Bus(transport, source="producer")
    try:
        await bus.publish_envelope(bus.envelope(Pinged(n=3)), trace={"traceparent": TRACEPARENT})
        await bus.publish_envelope(bus.envelope(Pinged(n=4)))

        async def arrived() -> bool:
            return len(got) == 2

        await wait_for(arrived)
    finally:
        await transport.stop()
    assert got[0].headers["traceparent"] == TRACEPARENT
    assert "traceparent" not in got[1].headers


@pytest.mark.unit
def test_a_traced_access_line_takes_the_formatted_path(
    span_recorder: SpanRecorder, tmp_path: Path
) -> None:
    """The access log's direct output has no trace id: while a span records, it is skipped."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with (tmp_path / "log").open("w") as stream:
        try:
            configure_logging("things", fmt="json", stream=stream)
            access = logging.getLogger("core.access")
            assert direct_output(access, logging.INFO) is not None
            tracer = tracing.tracer()
            assert tracer is not None
            with tracer.start_as_current_span("request"):
                assert direct_output(access, logging.INFO) is None
        finally:
            flush_logging()
            for handler in root.handlers:
                if handler not in handlers:
                    handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)

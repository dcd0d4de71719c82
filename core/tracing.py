"""OpenTelemetry tracing of a process: off and free unless configured, W3C trace context on the
wire.

Tracing is on in a process when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, and ``OTEL_SDK_DISABLED`` is not ``true``: the
first ``create_app`` of the process calls ``configure``, which installs an SDK ``TracerProvider``
whose spans go through a ``BatchSpanProcessor`` (a thread of its own: the event loop never waits
on an export) to the OTLP/HTTP exporter. The resource names the process: ``service.name`` is
``OTEL_SERVICE_NAME`` or the process name (``AIOSHOP_PROCESS``, else the role), and
``service.instance.id`` the process name. The SDK reads its other variables itself
(``OTEL_TRACES_SAMPLER``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_RESOURCE_ATTRIBUTES``...).

Off (no endpoint, and no provider installed by a test through ``install``), nothing of this
runs: ``core.app`` installs no middleware, the bus starts no span and writes no header, and
every helper here returns at its first test. Tests turn it on with ``install`` (the
``span_recorder`` fixture of ``core.testing``) and off again with ``uninstall``.

What makes spans (each a child of the current one, or of the context carried on the wire):

- ``core.middleware.tracing``: a server span per request, continuing an incoming
  ``traceparent``/``tracestate`` (a malformed one starts a new trace);
- ``client_span``: an outgoing HTTP call (the gateway's proxy, the orders service's catalog
  reads), whose headers get the ``traceparent`` of the span;
- ``producer_span``: a bus publication with a trace context (the request's, or the one the
  outbox stored with the row), whose message headers carry it; publications without one (the
  metrics snapshot, background work) start no trace;
- ``consumer_span``: a bus delivery whose message carries a ``traceparent``.

The provider is this module's, not OpenTelemetry's global one (which can be set only once per
process and would tie tests to each other).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = [
    "INSTRUMENTATION",
    "SERVICE_ATTRIBUTE",
    "TRACE_HEADERS",
    "UNTRACED_EVENTS",
    "TracingSettings",
    "client_span",
    "configure",
    "consumer_span",
    "current_ids",
    "enabled",
    "extract",
    "install",
    "producer_span",
    "record_status",
    "trace_headers",
    "tracer",
    "uninstall",
]

INSTRUMENTATION: Final = "aioshop"
# The W3C Trace Context headers, on HTTP requests and AMQP messages alike.
TRACE_HEADERS: Final = ("traceparent", "tracestate")
# The span attribute naming the core app (the role) a span belongs to: in the embedded mode, or
# in a test, several apps share one process and so one resource.
SERVICE_ATTRIBUTE: Final = "aioshop.service"
# Bus publications that never start nor continue a trace: once a second, from every instance.
UNTRACED_EVENTS: Final = frozenset({"metrics.snapshot"})

_PROPAGATOR: Final = TraceContextTextMapPropagator()
_OFF: Final = contextlib.nullcontext(None)


class TracingSettings(BaseSettings):
    """The standard OpenTelemetry variables that decide whether tracing is on, and the name."""

    model_config = SettingsConfigDict(extra="ignore")

    otlp_endpoint: str = Field(
        default="",
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
    )
    service_name: str = Field(default="", validation_alias="OTEL_SERVICE_NAME")
    sdk_disabled: bool = Field(default=False, validation_alias="OTEL_SDK_DISABLED")

    @property
    def exporting(self) -> bool:
        """Whether spans are to be exported."""
        return bool(self.otlp_endpoint.strip()) and not self.sdk_disabled


class _State:
    configured = False  # ``configure`` ran in this process (once is enough)
    provider: TracerProvider | None = None
    tracer: Tracer | None = None
    owned = False  # the provider is configure's (shut down at exit), not a test's


_state = _State()


def configure(process: str) -> bool:
    """Turn tracing on from the environment, once per process (later calls only answer);
    whether it is on. ``process`` names the process when ``AIOSHOP_PROCESS`` does not."""
    if _state.configured or _state.tracer is not None:
        return _state.tracer is not None
    _state.configured = True
    settings = TracingSettings()
    if not settings.exporting:
        return False
    # Imported only when on: the SDK and the exporter (protobuf, requests) cost at start-up.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("AIOSHOP_PROCESS") or process
    resource = Resource.create(
        {"service.name": settings.service_name or name, "service.instance.id": name}
    )
    provider = TracerProvider(resource=resource)  # shut down (flushed) at exit
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _use(provider, owned=True)
    return True


def install(provider: TracerProvider) -> None:
    """Trace with ``provider`` from now on (a test's, with an in-memory exporter)."""
    _use(provider, owned=False)


def uninstall() -> None:
    """Tracing off again; the next ``configure`` reads the environment again. A provider that
    ``configure`` made is shut down (a blocking flush: not on an event loop); a test's is left
    to its owner."""
    provider, owned = _state.provider, _state.owned
    _state.provider = _state.tracer = None
    _state.owned = _state.configured = False
    if owned and provider is not None:
        provider.shutdown()


def _use(provider: TracerProvider, *, owned: bool) -> None:
    _state.provider = provider
    _state.tracer = provider.get_tracer(INSTRUMENTATION)
    _state.owned = owned


def enabled() -> bool:
    """Whether tracing is on in this process now."""
    return _state.tracer is not None


def tracer() -> Tracer | None:
    """The tracer, or ``None`` when tracing is off."""
    return _state.tracer


def current_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` in hex of the current span when it records, else ``None``."""
    if _state.tracer is None:
        return None
    span = trace.get_current_span()
    if not span.is_recording():
        return None
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads a header from HTTP headers or AMQP headers (whose strings may arrive as bytes)."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier.keys())


_GETTER: Final = _HeaderGetter()


def extract(carrier: Mapping[str, Any]) -> Context:
    """The trace context in ``carrier``'s ``traceparent``/``tracestate`` (an empty context when
    there is none, or a malformed one: a span started in it begins a new trace)."""
    return _PROPAGATOR.extract(carrier, getter=_GETTER)


def trace_headers() -> dict[str, str] | None:
    """The current span's context as W3C headers, or ``None`` when tracing is off or there is
    no span: what the outbox stores with a row so that the relay continues the trace later."""
    if _state.tracer is None:
        return None
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier or None


def client_span(
    method: str,
    url: str,
    headers: MutableMapping[str, str],
    *,
    service: str,
    peer: str,
    **attributes: str,
) -> contextlib.AbstractContextManager[Span | None]:
    """The client span of an HTTP call of app ``service`` to ``peer`` (``None`` inside when
    off); its ``traceparent`` is set in ``headers`` on entry. ``url``: without its query."""
    if _state.tracer is None:
        return _OFF
    span_attributes = {
        "http.request.method": method,
        "url.full": url,
        "peer.service": peer,
        SERVICE_ATTRIBUTE: service,
        **attributes,
    }
    return _client_span(_state.tracer, f"{method} {peer}", headers, span_attributes)


def record_status(span: Span | None, status: int) -> None:
    """Record an HTTP response's status on ``span`` (a 5xx marks it failed)."""
    if span is None:
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


@contextlib.contextmanager
def _client_span(
    tracer: Tracer, name: str, headers: MutableMapping[str, str], attributes: Mapping[str, Any]
) -> Iterator[Span]:
    with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes) as span:
        _PROPAGATOR.inject(headers)
        yield span


def producer_span(
    event_type: str,
    *,
    message_id: str,
    source: str,
    system: str,
    stored: Mapping[str, str] | None,
    headers: MutableMapping[str, Any],
) -> contextlib.AbstractContextManager[Span | None]:
    """The span of one bus publication, a child of ``stored`` (the trace context the outbox
    kept with the row) or else of the current span; its context goes into ``headers``.

    No span when tracing is off, when there is no parent (background work starts no trace), or
    for ``UNTRACED_EVENTS``; ``stored`` headers are still passed on when tracing is off here, so
    that a trace started in a process that traces goes on in the consumers.
    """
    if event_type in UNTRACED_EVENTS:
        return _OFF
    tracer = _state.tracer
    if tracer is None:
        if stored:
            headers.update(stored)
        return _OFF
    if stored is not None:
        parent = extract(stored)
        if not trace.get_current_span(parent).get_span_context().is_valid:
            return _OFF
    else:
        if not trace.get_current_span().get_span_context().is_valid:
            return _OFF
        parent = None
    return _message_span(
        tracer,
        f"publish {event_type}",
        SpanKind.PRODUCER,
        parent,
        _messaging(event_type, message_id, source, system, "publish"),
        headers,
    )


def consumer_span(
    event_type: str,
    *,
    message_id: str,
    source: str,
    system: str,
    queue: str,
    headers: Mapping[str, Any],
) -> contextlib.AbstractContextManager[Span | None]:
    """The span of one bus delivery, a child of the context its ``headers`` carry; none when
    tracing is off or the message carries no (valid) ``traceparent``."""
    tracer = _state.tracer
    if tracer is None or "traceparent" not in headers:
        return _OFF
    parent = extract(headers)
    if not trace.get_current_span(parent).get_span_context().is_valid:
        return _OFF
    attributes = _messaging(event_type, message_id, source, system, "process")
    attributes["messaging.destination.subscription.name"] = queue
    return _message_span(
        tracer, f"process {event_type}", SpanKind.CONSUMER, parent, attributes, None
    )


def _messaging(
    event_type: str, message_id: str, source: str, system: str, operation: str
) -> dict[str, Any]:
    return {
        "messaging.system": system,
        "messaging.operation.type": operation,
        "messaging.destination.name": event_type,
        "messaging.message.id": message_id,
        SERVICE_ATTRIBUTE: source,
    }


@contextlib.contextmanager
def _message_span(
    tracer: Tracer,
    name: str,
    kind: SpanKind,
    parent: Context | None,
    attributes: Mapping[str, Any],
    headers: MutableMapping[str, Any] | None,
) -> Iterator[Span]:
    with tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=attributes
    ) as span:
        if headers is not None:
            _PROPAGATOR.inject(headers)
        yield span

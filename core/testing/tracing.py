"""Spans of a test: tracing on with the SDK's in-memory exporter (the ``span_recorder`` fixture).

::

    async def test_traced(span_recorder: SpanRecorder, service_client) -> None:
        client = await service_client(create_app(...))   # built while tracing is on
        await client.get("/things")
        (span,) = span_recorder.spans
        assert span.name == "GET /things"

Apps must be built while the recorder is on: ``create_app`` installs the tracing middleware only
then. Spans are exported as they end, in the thread that ends them.
"""

from __future__ import annotations

from collections.abc import Iterator

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from core import tracing

__all__ = ["SpanRecorder"]


class SpanRecorder:
    """Turns tracing on in this process with an in-memory exporter; ``stop`` turns it off."""

    def __init__(self, service_name: str = "test") -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}), shutdown_on_exit=False
        )
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def start(self) -> None:
        """Trace with this recorder's provider."""
        tracing.install(self.provider)

    def stop(self) -> None:
        """Tracing off again; the provider is shut down."""
        tracing.uninstall()
        self.provider.shutdown()

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        """Every span ended so far, in the order they ended."""
        return self.exporter.get_finished_spans()

    def clear(self) -> None:
        """Forget the spans ended so far."""
        self.exporter.clear()

    def trace(self, trace_id: int) -> list[ReadableSpan]:
        """The spans of one trace."""
        return [s for s in self.spans if s.context is not None and s.context.trace_id == trace_id]

    def of_kind(self, kind: SpanKind) -> list[ReadableSpan]:
        """The spans of one kind (server, client, producer, consumer, internal)."""
        return [s for s in self.spans if s.kind == kind]

    def named(self, name: str) -> list[ReadableSpan]:
        """The spans called ``name``."""
        return [s for s in self.spans if s.name == name]

    def __iter__(self) -> Iterator[ReadableSpan]:
        return iter(self.spans)

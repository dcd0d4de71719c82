"""The spans of the trace view: each trace id's spans read from a trace store's query API.

Jaeger's HTTP query API (``GET {base}/api/traces/{trace_id}``, the one its UI reads on :16686)
answers ``{"data": [{"traceID", "spans": [...], "processes": {...}}], "errors": null}``: a span
has ``operationName``, ``startTime`` and ``duration`` in microseconds (since the epoch for the
start), ``processID`` (a key of ``processes``, whose ``serviceName`` is the service) and
``tags`` (``{"key", "type", "value"}``). An OpenTelemetry span of status ``ERROR`` carries the tag
``error`` = ``true`` and ``otel.status_code`` = ``"ERROR"``; its kind is the tag ``span.kind``.
An unknown trace is a 404 (not exported yet, or sampled out).

``fetch_spans`` reads at most ``max_traces`` traces, in parallel, each within ``within``
seconds; a trace that cannot be read is a note, never an error of the view.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
from yarl import URL

__all__ = ["MAX_TRACE_BYTES", "SpanResult", "fetch_spans", "jaeger_spans", "trace_api_url"]

log = logging.getLogger("web.trace")

MAX_TRACE_BYTES = 4 * 1024 * 1024
"""The largest answer read for one trace (a bigger one is a note: open it in the trace UI)."""

_TRACE_ID = re.compile(r"^[0-9a-f]{16,32}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def trace_api_url(value: str) -> str:
    """``value`` as the base address of a trace query API: http(s), a host, no query, user
    or fragment; without its trailing ``/``. Raises ``ValueError`` otherwise."""
    try:
        url = URL(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("an http(s) address with a host, e.g. http://jaeger:16686")
    if url.query_string or url.fragment or url.user or url.password:
        raise ValueError("an address without a query, a fragment or credentials")
    return str(url).rstrip("/")


@dataclass(slots=True)
class SpanResult:
    """What the trace API gave: the spans (timeline items, in time order), per trace id
    ``"ok"``, ``"not found"``, ``"failed"`` or ``"not fetched"`` and the number of its spans
    read, and notes for the page."""

    spans: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    truncated: bool = False


def _tags(holder: dict[str, Any]) -> dict[str, Any]:
    tags = holder.get("tags")
    if not isinstance(tags, list):
        return {}
    return {
        str(tag["key"]): tag.get("value")
        for tag in tags
        if isinstance(tag, dict) and isinstance(tag.get("key"), str)
    }


def _span_view(span: dict[str, Any], services: dict[str, str]) -> dict[str, Any] | None:
    start, duration = span.get("startTime"), span.get("duration")
    if not isinstance(start, int) or not isinstance(duration, int) or isinstance(start, bool):
        return None
    try:
        at = _EPOCH + timedelta(microseconds=start)
    except OverflowError:
        return None
    tags = _tags(span)
    status = str(tags.get("otel.status_code") or "").lower()
    error = tags.get("error") in (True, "true") or status == "error"
    return {
        "at": at.isoformat(),
        "service": services.get(str(span.get("processID")), ""),
        "operation": str(span.get("operationName", "")),
        "duration_ms": round(max(duration, 0) / 1000, 3),
        "status": "error" if error else (status or "unset"),
        "message": str(tags.get("otel.status_description") or tags.get("error.message") or ""),
        "span_kind": str(tags.get("span.kind") or "internal"),
        "trace_id": str(span.get("traceID", "")),
        "span_id": str(span.get("spanID", "")),
    }


def jaeger_spans(body: Any) -> list[dict[str, Any]]:
    """The spans of a Jaeger query API answer as timeline items (``kind`` ``"span"``), in time
    order; what is not a span (a missing field, a wrong type) is left out."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise ValueError("not a Jaeger answer: no data list")
    items: list[dict[str, Any]] = []
    for trace in body["data"]:
        if not isinstance(trace, dict) or not isinstance(trace.get("spans"), list):
            continue
        processes = trace.get("processes")
        services = {
            str(key): str(process.get("serviceName", ""))
            for key, process in (processes.items() if isinstance(processes, dict) else ())
            if isinstance(process, dict)
        }
        for span in trace["spans"]:
            view = _span_view(span, services) if isinstance(span, dict) else None
            if view is not None:
                items.append({"kind": "span", **view})
    items.sort(key=lambda item: str(item["at"]))
    return items


async def _read(response: aiohttp.ClientResponse) -> bytes:
    if (response.content_length or 0) > MAX_TRACE_BYTES:
        raise ValueError(f"more than {MAX_TRACE_BYTES} bytes")
    body = await response.content.read(MAX_TRACE_BYTES + 1)
    while len(body) <= MAX_TRACE_BYTES:
        chunk = await response.content.read(MAX_TRACE_BYTES + 1 - len(body))
        if not chunk:
            return body
        body += chunk
    raise ValueError(f"more than {MAX_TRACE_BYTES} bytes")


async def _one(
    session: aiohttp.ClientSession, base: str, trace_id: str, within: float
) -> tuple[str, list[dict[str, Any]]]:
    """``("ok", spans)``, ``("not found", [])`` or ``("failed: <why>", [])``."""
    url = URL(base) / "api" / "traces" / trace_id
    try:
        async with session.get(
            url,
            timeout=aiohttp.ClientTimeout(total=within),
            allow_redirects=False,
            headers={"Accept": "application/json"},
        ) as response:
            if response.status == 404:
                return "not found", []
            if response.status != 200:
                return f"failed: HTTP {response.status}", []
            body = await _read(response)
        spans = jaeger_spans(orjson.loads(body))
    except TimeoutError:
        return f"failed: no answer within {within:g} s", []
    except aiohttp.ClientError as exc:
        return f"failed: {type(exc).__name__}", []
    except ValueError as exc:  # orjson.JSONDecodeError included
        return f"failed: {exc}", []
    return ("ok", spans) if spans else ("not found", [])


async def fetch_spans(
    session: aiohttp.ClientSession,
    base: str,
    trace_ids: list[str],
    *,
    max_traces: int,
    max_spans: int,
    within: float,
) -> SpanResult:
    """The spans of the first ``max_traces`` of ``trace_ids`` from the query API at ``base``,
    read in parallel within ``within`` seconds each; at most ``max_spans`` (the earliest)."""
    result = SpanResult()
    wanted = [trace_id for trace_id in trace_ids if _TRACE_ID.fullmatch(trace_id)]
    asked, rest = wanted[:max_traces], wanted[max_traces:]
    answers = await asyncio.gather(*(_one(session, base, t, within) for t in asked))
    failed = 0
    for trace_id, (status, spans) in zip(asked, answers, strict=True):
        result.status[trace_id] = "failed" if status.startswith("failed") else status
        result.spans.extend(spans)
        result.counts[trace_id] = len(spans)
        if status.startswith("failed"):
            failed += 1
            result.notes.append(f"The spans of trace {trace_id} could not be read ({status[8:]}).")
        elif status == "not found":
            result.notes.append(f"Trace {trace_id} is not in the trace store (yet).")
    if failed:
        log.warning("the trace API at %s failed for %d of %d traces", base, failed, len(asked))
    for trace_id in rest:
        result.status[trace_id] = "not fetched"
    if rest:
        result.notes.append(
            f"{len(rest)} more traces not fetched (at most {max_traces}): see the trace UI."
        )
    result.spans.sort(key=lambda item: str(item["at"]))
    if len(result.spans) > max_spans:
        result.spans, result.truncated = result.spans[:max_spans], True
        result.notes.append(f"Only the first {max_spans} spans are shown.")
    return result

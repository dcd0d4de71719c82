"""The trace view: everything known of one correlation id (an order's, a request's) on one
timeline: its bus events from the event archive, its log lines from the log files of every
process, the trace ids of its spans, linked to a trace UI, and, when a trace query API is named,
those spans themselves (``web.trace_spans``).

Routes (``add_trace_routes``):

- ``GET /dashboard/trace/{correlation_id}`` and ``GET /dashboard/trace?order_id=`` (or
  ``?correlation_id=``): the page (Jinja, escaped, no inline script);
- ``GET /dashboard/api/trace/{correlation_id}`` and ``GET /dashboard/api/trace?order_id=``: the
  same as JSON.

An order's correlation id is the one the dashboard saw on its saga's events, else the one of its
``order.placed`` event in the archive (one query by ``data.order_id``, which the archive
indexes). Sources (``TraceSettings``, from the environment):
``DASHBOARD_LOG_DIR``, the directory of the log files (``aioshop up`` sets
``<data-dir>/logs``); ``DASHBOARD_TRACE_URL``, a trace UI's address with ``{trace_id}`` (Jaeger:
``http://host:16686/trace/{trace_id}``); ``DASHBOARD_TRACE_API``, a trace store's query API
(Jaeger's: ``http://jaeger:16686``), from which the spans of at most
``DASHBOARD_TRACE_API_TRACES`` of those trace ids are read, in parallel, each within
``DASHBOARD_TRACE_API_TIMEOUT`` seconds (a failure is a note on the page). The archive is the
app's ``web.archive.ARCHIVE`` when it runs; without it the page says so.

Who sees it: callers with ``metrics:read`` only, development included (like the archive: events
and log lines carry personal data). The page asks for a sign-in when it came without a token (a
link cannot carry one): its script (``static/trace.js``) then reads the JSON.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp_jinja2
import orjson
from aiohttp import hdrs, web
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.archive.base import MAX_LIMIT, ArchiveUnavailable, EventArchive
from core.context import valid_correlation_id
from core.errors import BadRequest, Forbidden, NotFound, Unauthorized
from core.logfiles import LogFilter, LogLine, merged
from core.settings import load_settings
from web.access import Access
from web.archive import ARCHIVE
from web.state import DashboardState
from web.trace_spans import fetch_spans, trace_api_url

__all__ = ["TRACE", "Trace", "TraceSettings", "TraceSources", "add_trace_routes", "load_trace"]

log = logging.getLogger("web.trace")

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?P<trace>[0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_ORDER_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


class TraceSettings(BaseSettings):
    """Where the trace view finds log lines and spans.

    - ``dashboard_log_dir`` (``DASHBOARD_LOG_DIR``): the directory of every process's log file;
      unset, the view shows no log lines;
    - ``dashboard_trace_url`` (``DASHBOARD_TRACE_URL``): a trace UI's address of one trace, with
      ``{trace_id}`` in it; unset, trace ids are shown without a link;
    - ``dashboard_trace_api`` (``DASHBOARD_TRACE_API``): a trace store's query API (Jaeger's,
      ``GET {api}/api/traces/{trace_id}``); unset, no span is read;
    - ``dashboard_trace_api_traces`` / ``dashboard_trace_api_timeout``: the most traces read
      from it for one view, and the seconds each may take;
    - ``dashboard_trace_lines`` / ``dashboard_trace_events`` / ``dashboard_trace_spans``: the
      most log lines, events and spans shown.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    dashboard_log_dir: Path | None = None
    dashboard_trace_url: str | None = None
    dashboard_trace_lines: int = Field(default=2000, ge=1, le=100_000)
    dashboard_trace_events: int = Field(default=1000, ge=1, le=100_000)
    dashboard_trace_api: str | None = None
    dashboard_trace_api_traces: int = Field(default=5, ge=1, le=50)
    dashboard_trace_api_timeout: float = Field(default=2.0, gt=0, le=30)
    dashboard_trace_spans: int = Field(default=1000, ge=1, le=100_000)

    @field_validator("dashboard_trace_url")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")) or "{trace_id}" not in value:
            raise ValueError("DASHBOARD_TRACE_URL is an http(s) address with {trace_id} in it")
        return value

    @field_validator("dashboard_trace_api")
    @classmethod
    def _api(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        try:
            return trace_api_url(value)
        except ValueError as exc:
            raise ValueError(f"DASHBOARD_TRACE_API is {exc}") from exc


@dataclass(slots=True)
class TraceSources:
    """What the trace view reads: the dashboard's access rules and state, and its settings
    (read at start-up when not given: reading ``.env`` blocks), and the HTTP session of the
    trace API (open while the app runs, when one is named)."""

    access: Access
    state: DashboardState
    settings: TraceSettings = field(default_factory=lambda: TraceSettings(_env_file=None))
    session: aiohttp.ClientSession | None = None


TRACE = web.AppKey("dashboard_trace", TraceSources)


@dataclass(slots=True)
class Trace:
    """What is known of one correlation id."""

    correlation_id: str
    order_id: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)
    spans: list[dict[str, Any]] = field(default_factory=list)  # the trace ids
    timeline_spans: list[dict[str, Any]] = field(default_factory=list)  # from the trace API
    archive: str = "ok"  # or "none" (no archive runs), "unavailable"
    logs: str = "ok"  # or "none" (no log directory configured)
    trace_api: str = "none"  # (none named) or "ok", "partial" (some failed), "unavailable"
    notes: list[str] = field(default_factory=list)
    truncated: bool = False

    def timeline(self) -> list[dict[str, Any]]:
        """Events, log lines and spans together, in time order."""
        items = [{"kind": "event", **event} for event in self.events]
        items += [{"kind": "log", **line} for line in self.lines]
        items += [{**span, "kind": "span"} for span in self.timeline_spans]
        items.sort(key=lambda item: str(item["at"]))
        for item in items:
            item["time"] = _clock(str(item["at"]))
        return items

    def view(self) -> dict[str, Any]:
        """The JSON of the view."""
        return {
            "correlation_id": self.correlation_id,
            "order_id": self.order_id,
            "archive": self.archive,
            "logs": self.logs,
            "trace_api": self.trace_api,
            "notes": self.notes,
            "truncated": self.truncated,
            "spans": self.spans,
            "timeline": self.timeline(),
        }


def _archive(app: web.Application) -> EventArchive | None:
    return app.get(ARCHIVE)  # absent when no archive runs


def _at(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat()
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def _clock(at: str) -> str:
    """``2026-03-01 12:00:00.500``: an ISO time (UTC) as the page shows it."""
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        return at
    return f"{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond // 1000:03d}"


def _event_view(envelope: dict[str, Any]) -> dict[str, Any]:
    return {
        "at": _at(envelope.get("occurred_at")),
        "type": str(envelope.get("type", "")),
        "source": str(envelope.get("source", "")),
        "id": str(envelope.get("id", "")),
        "data": orjson.dumps(envelope.get("data", {}), default=str).decode(),
        "trace_id": _envelope_trace(envelope),
    }


def _envelope_trace(envelope: dict[str, Any]) -> str | None:
    for holder in (envelope, envelope.get("headers") or {}):
        if isinstance(holder, dict):
            match = _TRACEPARENT.match(str(holder.get("traceparent", "")))
            if match:
                return match["trace"]
    return None


async def _events(archive: EventArchive, correlation_id: str, limit: int) -> tuple[list[Any], bool]:
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await archive.query(
            correlation_id=correlation_id, cursor=cursor, limit=min(limit - len(events), 1000)
        )
        events.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return events, False
        if len(events) >= limit:
            return events, True


def _log_lines(directory: Path, correlation_id: str, limit: int) -> tuple[list[LogLine], bool]:
    lines = list(
        itertools.islice(merged(directory, LogFilter(correlation_id=correlation_id)), limit + 1)
    )
    return lines[:limit], len(lines) > limit


async def load_trace(
    app: web.Application, correlation_id: str, *, order_id: str | None = None
) -> Trace:
    """Gather what the archive and the log files hold of ``correlation_id``."""
    settings = app[TRACE].settings
    trace = Trace(correlation_id, order_id=order_id)
    archive = _archive(app)
    if archive is None:
        trace.archive = "none"
    else:
        try:
            envelopes, cut = await _events(archive, correlation_id, settings.dashboard_trace_events)
        except ArchiveUnavailable as exc:
            log.warning("the event archive cannot be reached: %s", exc)
            trace.archive = "unavailable"
        else:
            trace.events = [_event_view(envelope) for envelope in envelopes]
            trace.truncated |= cut
    if settings.dashboard_log_dir is None:
        trace.logs = "none"
    else:
        lines, cut = await asyncio.to_thread(
            _log_lines, settings.dashboard_log_dir, correlation_id, settings.dashboard_trace_lines
        )
        trace.lines = [line.view() for line in lines]
        trace.truncated |= cut
    seen: dict[str, list[str]] = {}
    for item in trace.timeline():
        trace_id = item.get("trace_id")
        if trace_id:
            processes = seen.setdefault(str(trace_id), [])
            who = str(item.get("process") or item.get("source") or "")
            if who and who not in processes:
                processes.append(who)
    template = settings.dashboard_trace_url
    trace.spans = [
        {
            "trace_id": trace_id,
            "processes": processes,
            "url": template.replace("{trace_id}", trace_id) if template else None,
        }
        for trace_id, processes in seen.items()
    ]
    session = app[TRACE].session
    if settings.dashboard_trace_api is not None and session is not None:
        trace.trace_api = "ok"
        if seen:
            await _add_spans(trace, session, settings)
    return trace


async def _add_spans(trace: Trace, session: aiohttp.ClientSession, settings: TraceSettings) -> None:
    """The spans of the trace ids found, from the trace API, onto ``trace``."""
    found = await fetch_spans(
        session,
        str(settings.dashboard_trace_api),
        [str(entry["trace_id"]) for entry in trace.spans],
        max_traces=settings.dashboard_trace_api_traces,
        max_spans=settings.dashboard_trace_spans,
        within=settings.dashboard_trace_api_timeout,
    )
    trace.timeline_spans = found.spans
    trace.notes = found.notes
    trace.truncated |= found.truncated
    for entry in trace.spans:
        entry["status"] = found.status.get(str(entry["trace_id"]), "not fetched")
        entry["span_count"] = found.counts.get(str(entry["trace_id"]), 0)
    statuses = set(found.status.values())
    if "failed" in statuses:
        trace.trace_api = "unavailable" if statuses == {"failed"} else "partial"


async def _order_correlation(app: web.Application, order_id: str) -> str:
    saga = app[TRACE].state.sagas.get(order_id)
    if saga is not None and saga.correlation_id:
        return saga.correlation_id
    archive = _archive(app)
    if archive is not None:
        # One indexed query; an order has one order.placed (the newest wins if ever more).
        try:
            page = await archive.query(
                type="order.placed", data={"order_id": order_id}, limit=MAX_LIMIT
            )
        except ArchiveUnavailable as exc:
            log.warning("the event archive cannot be reached: %s", exc)
        else:
            for envelope in reversed(page.items):
                if envelope.get("correlation_id"):
                    return str(envelope["correlation_id"])
    raise NotFound(f"No correlation id known for order {order_id}")


async def _authorize(request: web.Request) -> None:
    viewer = await request.app[TRACE].access.viewer(request)
    # Never the public view: archived events and log lines carry personal data (web.archive's
    # rule), development included.
    if not viewer.authenticated:
        raise Unauthorized("Sign in with an account that has metrics:read")
    if not viewer.full:
        raise Forbidden("A trace needs metrics:read")


def _asked(request: web.Request) -> tuple[str | None, str | None]:
    """The correlation id and the order id the request names (either may be missing)."""
    correlation_id = request.match_info.get("correlation_id") or request.query.get("correlation_id")
    order_id = request.query.get("order_id")
    if correlation_id is None and order_id is None:
        raise BadRequest("Give a correlation id or ?order_id=")
    if correlation_id is not None and not valid_correlation_id(correlation_id):
        raise BadRequest("Not a correlation id (1 to 128 of A-Z a-z 0-9 . _ : -)")
    if order_id is not None and not _ORDER_ID.fullmatch(order_id):
        raise BadRequest("Not an order id")
    return correlation_id, order_id


async def _resolve(request: web.Request) -> tuple[str, str | None]:
    correlation_id, order_id = _asked(request)
    await _authorize(request)
    if correlation_id is None:
        correlation_id = await _order_correlation(request.app, order_id or "")
    return correlation_id, order_id


async def _page(request: web.Request) -> web.Response:
    """The trace as a page; without a token where one is needed, a sign-in form whose script
    reads the JSON (a link cannot carry the token)."""
    api = request.rel_url.with_path("/dashboard/api" + request.path.removeprefix("/dashboard"))
    try:
        correlation_id, order_id = await _resolve(request)
    except (Unauthorized, Forbidden):
        if hdrs.AUTHORIZATION in request.headers:
            raise
        asked, order_id = _asked(request)
        context: dict[str, Any] = {
            "trace": None,
            "correlation_id": asked or "",
            "order_id": order_id,
            "api": str(api),
        }
    else:
        trace = await load_trace(request.app, correlation_id, order_id=order_id)
        context = {
            "trace": trace,
            "timeline": trace.timeline(),
            "correlation_id": correlation_id,
            "order_id": order_id,
            "api": str(api),
        }
    response = aiohttp_jinja2.render_template("trace.html", request, context)
    response.headers["Cache-Control"] = "no-store"
    return response


async def _api(request: web.Request) -> web.Response:
    """The trace as JSON."""
    correlation_id, order_id = await _resolve(request)
    trace = await load_trace(request.app, correlation_id, order_id=order_id)
    return web.Response(
        body=orjson.dumps(trace.view()),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def add_trace_routes(
    app: web.Application,
    *,
    access: Access,
    state: DashboardState,
    settings: TraceSettings | None = None,
) -> None:
    """Register the trace view's routes on the dashboard ``app``, with its access rules and its
    state (an order's correlation id); ``settings`` from the environment by default."""
    app[TRACE] = sources = TraceSources(access, state)
    if settings is not None:
        sources.settings = settings

    async def load(app: web.Application) -> AsyncIterator[None]:
        if settings is None:
            sources.settings = await asyncio.to_thread(load_settings, TraceSettings)
        if sources.settings.dashboard_trace_api is None:
            yield
            return
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=sources.settings.dashboard_trace_api_traces),
            raise_for_status=False,
        ) as session:
            sources.session = session
            try:
                yield
            finally:
                sources.session = None

    app.cleanup_ctx.append(load)
    app.router.add_get("/dashboard/trace", _page, name="dashboard_trace_query")
    app.router.add_get("/dashboard/trace/{correlation_id}", _page, name="dashboard_trace")
    app.router.add_get("/dashboard/api/trace", _api, name="dashboard_trace_api_query")
    app.router.add_get("/dashboard/api/trace/{correlation_id}", _api, name="dashboard_trace_api")

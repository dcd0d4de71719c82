"""The dashboard application: ``create_web_app(settings)``, served on :8080 (``python -m web``).

Routes (all under ``/dashboard``, so that the gateway's ``/dashboard`` prefix reaches them):

- ``GET /dashboard``: the page, rendered on the server with the current state (Jinja, escaped);
  its script then follows ``GET /dashboard/stream``;
- ``GET /dashboard/stream``: Server-Sent Events, an update per ``dashboard_push_interval``;
- ``GET /dashboard/api/state``: the same view as JSON (``?history=1`` adds the chart points);
- ``GET /dashboard/static/{name}``: the script, the style sheet and the icon of the page;
- ``GET /dashboard/trace/{correlation_id}`` (and ``/dashboard/api/trace/...``, JSON): one
  correlation id's events, log lines and traces on one timeline (``web.trace``);
- ``POST /dashboard/api/alerts``: Alertmanager's webhook (``web.alerts``), with its own token.

The page and its static files are public. The data (stream and JSON) is too in development
only: elsewhere it needs ``Authorization: Bearer`` with ``metrics:read`` (``web.access``), and
the page carries no data but a login form; its script signs in through ``/api/v1/auth/login``
(the gateway's, same origin), keeps the token in memory and reads the stream with ``fetch``.
A public dashboard shows no host names, pids or ids to callers without ``metrics:read``.

Plus core's ``/healthz``, ``/readyz``, ``/metrics``, ``/asyncapi.json``. The dashboard is a
service instance like the others: it publishes its own ``metrics.snapshot``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
import orjson
from aiohttp import hdrs, web
from prometheus_client import Counter, Gauge

from core import BUS, HEALTH, METRICS, create_app, redis_ctx
from core.app import CleanupCtx, auth_ctx
from core.bus import BroadcastSubscription, InMemoryTransport, Transport, bus_ctx, bus_workers_ctx
from core.errors import TooManyRequests
from core.snapshot import SNAPSHOT
from web.access import Access
from web.alerts import alerts_handler
from web.archive import archive_ctx, archive_router
from web.feed import open_feed
from web.settings import Settings
from web.state import POINT_FIELDS, DashboardState, StateLimits
from web.stream import Hub, StreamLimits, stream_response
from web.trace import add_trace_routes

__all__ = [
    "ACCESS",
    "DASHBOARD_CSP",
    "FEED",
    "HUB",
    "STATE",
    "create_web_app",
    "run_web",
]

PACKAGE = Path(__file__).resolve().parent
TEMPLATES = PACKAGE / "templates"
STATIC = {path.name: path for path in (PACKAGE / "static").iterdir() if path.is_file()}

DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)

STATE = web.AppKey("dashboard_state", DashboardState)
HUB = web.AppKey("dashboard_hub", Hub)
FEED = web.AppKey("dashboard_feed", BroadcastSubscription)
ACCESS = web.AppKey("dashboard_access", Access)
REJECTED: web.AppKey[Counter] = web.AppKey("dashboard_feed_rejected")
REFUSED: web.AppKey[Counter] = web.AppKey("dashboard_streams_refused")


_DASH = "\u2013"  # an en dash for a missing figure, as the page's script shows it


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return _DASH
    return f"{value:,.{digits}f}"


def _bytes(value: Any) -> str:
    if value is None:
        return _DASH
    return f"{value / 2**20:,.1f} MB"


def _pct(value: Any, digits: int = 1) -> str:
    if value is None:
        return _DASH
    return f"{value * 100:.{digits}f}%"


def _money(cents: Any, currency: str = "USD") -> str:
    if cents is None:
        return _DASH
    return f"{cents / 100:,.2f} {currency}"


def _short(value: Any, length: int = 8) -> str:
    return "" if value is None else str(value)[:length]


def _figure(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its extension
        auto_reload=False,  # loaded once, off the event loop, at start-up
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_num, mb=_bytes, pct=_pct, money=_money, short=_short, figure=_figure)
    return env


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/dashboard"):
        response.headers["Content-Security-Policy"] = DASHBOARD_CSP


async def _page(request: web.Request) -> web.Response:
    """The page: with the public view on a public dashboard, else empty, behind a login form
    (the page never reads a token: the data comes with the stream once signed in)."""
    app = request.app
    hub = app[HUB]
    public = app[ACCESS].public
    view = hub.view(full=False) if public else DashboardState(hub.state.limits).view(full=False)
    context = {
        "view": view,
        "public": public,
        "instance": hub.state.pseudonym(app[SNAPSHOT].instance) if public else "",
        "push_interval": hub.interval,
    }
    response = aiohttp_jinja2.render_template("dashboard.html", request, context)
    response.headers["Cache-Control"] = "no-store"
    return response


async def _api_state(request: web.Request) -> web.Response:
    """The view as JSON; with ``?history=1``, every instance's chart points too."""
    viewer = await request.app[ACCESS].viewer(request)
    hub = request.app[HUB]
    body: dict[str, Any] = {"view": hub.state.view(full=viewer.full)}
    if request.query.get("history") in ("1", "true"):
        body["history"] = hub.state.history(full=viewer.full)
        body["fields"] = list(POINT_FIELDS)
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def _stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``state`` once, then ``tick`` every push interval."""
    access = request.app[ACCESS]
    viewer = await access.viewer(request)

    async def recheck() -> None:
        await access.authenticate(request)

    try:
        return await stream_response(
            request,
            request.app[HUB],
            viewer,
            recheck=recheck if request.headers.get(hdrs.AUTHORIZATION) is not None else None,
        )
    except TooManyRequests:
        request.app[REFUSED].inc()
        raise


async def _static(request: web.Request) -> web.StreamResponse:
    """One of the page's assets (a fixed set: nothing outside the package is reachable)."""
    path = STATIC.get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "public, max-age=300"})


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    """``/`` and ``/dashboard/`` lead to the page."""
    raise web.HTTPFound("/dashboard")


def _templates_ctx(env: jinja2.Environment) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        def load() -> None:
            for name in env.list_templates():
                env.get_template(name)

        await asyncio.to_thread(load)
        yield

    return ctx


def _feed_ctx(*, ready_check: bool) -> CleanupCtx:
    """The dashboard's broadcast subscription to the bus (``web.feed``); over RabbitMQ, a
    ``feed`` readiness check."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        feed = await open_feed(
            app[BUS],
            f"aioshop.dashboard.{app[SNAPSHOT].instance}",
            app[STATE].apply,
            on_reject=lambda: app[REJECTED].labels("envelope").inc(),
        )
        app[FEED] = feed

        async def check() -> None:
            if not feed.connected:
                raise ConnectionError("the dashboard feed is not connected")

        if ready_check:
            app[HEALTH].add("feed", check)
        try:
            yield
        finally:
            if ready_check:
                app[HEALTH].remove("feed")
            await feed.stop()

    return ctx


def _hub_ctx() -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        hub = app[HUB]
        await hub.start()
        try:
            yield
        finally:
            await hub.close()

    return ctx


def create_web_app(
    settings: Settings | None = None, *, transport: Transport | None = None
) -> web.Application:
    """The dashboard application.

    It reads the bus through a broadcast subscription of its own (``web.feed``): over RabbitMQ
    (``bus_transport="amqp"``, or an AMQP ``transport``) an exclusive queue on the transport's
    exchange; in memory, pass the ``InMemoryTransport`` the services share (single-process mode).
    """
    settings = settings or Settings()
    state = DashboardState(
        StateLimits(
            retention=settings.dashboard_retention,
            stale_after=settings.dashboard_stale_after,
            down_after=settings.dashboard_down_after,
            error_ratio=settings.dashboard_error_ratio,
            orders=settings.dashboard_orders,
            events=settings.dashboard_events,
        ),
    )
    if transport is not None:
        in_memory = isinstance(transport, InMemoryTransport)
    else:
        in_memory = settings.bus_transport == "memory"
    env = _environment()
    resources: list[CleanupCtx] = [
        _templates_ctx(env),
        redis_ctx(  # token revocations
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            pool_timeout=settings.redis_pool_timeout,
        ),
        auth_ctx(settings),
        bus_ctx(settings, transport=transport),
        _feed_ctx(ready_check=not in_memory),
        archive_ctx(settings),  # after the bus, before its consumers start
        bus_workers_ctx(None),
        _hub_ctx(),
    ]
    app = create_app(
        "web",
        settings,
        resources=resources,
        title="aioshop dashboard",
        description="The live dashboard of every service instance, order saga and event.",
    )
    app[aiohttp_jinja2.APP_KEY] = env
    app[STATE] = state
    app[HUB] = hub = Hub(
        state,
        interval=settings.dashboard_push_interval,
        limits=StreamLimits(
            lifetime=settings.dashboard_stream_lifetime,
            heartbeat=settings.dashboard_heartbeat,
            per_client=settings.dashboard_streams_per_client,
            total=settings.dashboard_streams_total,
            reserved=settings.dashboard_streams_reserved,
        ),
    )
    app[ACCESS] = Access(
        public=settings.dashboard_is_public, trusted_proxies=settings.dashboard_trusted_proxies
    )
    registry = app[METRICS].registry
    app[REJECTED] = counter = Counter(
        "dashboard_feed_rejected",
        "Bus messages the dashboard dropped as malformed, by kind (snapshot, event, envelope)",
        ["kind"],
        registry=registry,
    )
    for kind in ("snapshot", "event", "envelope"):
        counter.labels(kind)
    state.on_reject = lambda kind: counter.labels(kind).inc()
    app[REFUSED] = Counter(
        "dashboard_streams_refused", "Dashboard streams refused (429)", registry=registry
    )
    Gauge("dashboard_streams_open", "Dashboard streams open", registry=registry).set_function(
        lambda: hub.clients
    )
    app.on_response_prepare.append(_security_headers)
    app.on_shutdown.append(hub.close)
    app.router.add_get("/", _to_dashboard, name="root")
    app.router.add_get("/dashboard", _page, name="dashboard")
    app.router.add_get("/dashboard/", _to_dashboard, name="dashboard_slash")
    app.router.add_get("/dashboard/api/state", _api_state, name="dashboard_state")
    app.router.add_get("/dashboard/stream", _stream, name="dashboard_stream")
    app.router.add_get("/dashboard/static/{name}", _static, name="dashboard_static")
    # GET /dashboard/trace/{correlation_id} and /dashboard/api/trace/... (web.trace)
    add_trace_routes(app, access=app[ACCESS], state=state)
    archive_router.setup(app)  # GET /api/v1/admin/events (web.archive)
    app.router.add_post(
        "/dashboard/api/alerts",
        alerts_handler(state.alerts, settings.dashboard_alerts_token),
        name="dashboard_alerts",
    )
    return app


def run_web(settings: Settings | None = None) -> None:
    """Serve the dashboard on ``settings.host:settings.port`` until SIGINT/SIGTERM."""
    from core.runner import run

    settings = settings or Settings()
    run(create_web_app(settings), host=settings.host, port=settings.port)

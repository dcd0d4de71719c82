"""The application factory: one call builds a service's aiohttp app with everything core gives.

``create_app`` wires the middleware stack, the operational routes (``/healthz``, ``/readyz``,
``/metrics``, ``/openapi.json``, ``/docs``), the service's routers and its resources (each a
``cleanup_ctx``, started in order and closed in reverse, even after a failed start).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import orjson
from aiohttp import web

from core.auth.authenticator import Authenticator
from core.auth.revocation import RevocationStore
from core.auth.tokens import TokenCodec
from core.bus.app import BUS, BUS_COMPANIONS, BusCompanion
from core.bus.asyncapi import build_asyncapi
from core.disk import DiskCollector, data_directories
from core.errors import Forbidden
from core.forwarded import PROXIES, TrustedProxies
from core.handlers import ROUTES, RouteDef, Router
from core.health import HEALTH, HealthChecks
from core.health_details import details_ctx
from core.keys import AUTHENTICATOR, REDIS, SERVICE_NAME, SETTINGS
from core.metrics import METRICS, Metrics, metrics_handler
from core.middleware import (
    access_log_middleware,
    body_limit_middleware,
    correlation_middleware,
    cors_middleware,
    error_middleware,
    metrics_middleware,
    security_headers,
    tracing_middlewares,
)
from core.openapi import DOCS_INIT_JS, SWAGGER_ASSETS, build_openapi, docs_page
from core.settings import BaseServiceSettings
from core.snapshot import SNAPSHOT, Snapshotter

__all__ = ["METRICS_PERMISSION", "CleanupCtx", "auth_ctx", "create_app", "token_codec"]

# The permission that reads /metrics from outside ``METRICS_ALLOW`` (the dashboard's, too).
METRICS_PERMISSION = "metrics:read"

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def token_codec(settings: BaseServiceSettings, *, signing: bool = False) -> TokenCodec:
    """A ``TokenCodec`` from settings; with ``signing=False`` it only verifies."""
    private = (
        settings.jwt_private_key.get_secret_value()
        if signing and settings.jwt_private_key
        else None
    )
    return TokenCodec(
        public_key=settings.jwt_public_key,
        private_key=private,
        algorithm=settings.jwt_algorithm,
        issuer=settings.jwt_issuer,
        access_ttl=settings.access_token_ttl,
        refresh_ttl=settings.refresh_token_ttl,
    )


def auth_ctx(settings: BaseServiceSettings) -> CleanupCtx:
    """A ``cleanup_ctx`` that sets ``app[AUTHENTICATOR]``, checking revocations in ``app[REDIS]``.

    Add it after ``redis_ctx``.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        revocations = RevocationStore(
            app[REDIS], namespace=settings.redis_namespace, access_ttl=settings.access_token_ttl
        )
        app[AUTHENTICATOR] = Authenticator(token_codec(settings), revocations)
        yield

    return ctx


def create_app(
    name: str,
    settings: BaseServiceSettings,
    *,
    routers: Iterable[Router] = (),
    resources: Sequence[CleanupCtx] = (),
    title: str | None = None,
    version: str = "1.0.0",
    description: str = "",
    middlewares: Sequence[Any] = (),
) -> web.Application:
    """Build the application of service ``name``."""
    app = web.Application(
        middlewares=[
            correlation_middleware,
            *tracing_middlewares(name),  # none unless tracing is on (core.tracing)
            access_log_middleware,
            metrics_middleware,
            cors_middleware(origins=settings.cors_origins),
            error_middleware,
            body_limit_middleware(max_bytes=settings.max_body_bytes),
            *middlewares,
        ],
        client_max_size=settings.max_body_bytes,
    )
    app[SERVICE_NAME] = name
    app[SETTINGS] = settings
    app[PROXIES] = TrustedProxies(settings.trusted_proxies)
    app[METRICS] = Metrics(name)
    app[METRICS].registry.register(DiskCollector(data_directories(settings.data_dirs)))
    app[SNAPSHOT] = Snapshotter(app, name, app[METRICS])
    companions: list[BusCompanion] = [app[SNAPSHOT]]
    app[BUS_COMPANIONS] = companions
    app[HEALTH] = HealthChecks()
    app[ROUTES] = []
    app.on_response_prepare.append(security_headers)
    app.cleanup_ctx.extend(resources)
    app.cleanup_ctx.append(details_ctx(settings))  # last: it reads what the resources set
    for router in routers:
        router.setup(app)
    _add_operational_routes(
        app, title=title or f"aioshop {name}", version=version, description=description
    )
    return app


def _add_operational_routes(
    app: web.Application, *, title: str, version: str, description: str
) -> None:
    spec_cache: dict[str, bytes] = {}
    settings = app[SETTINGS]

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": request.app[SERVICE_NAME]})

    async def readyz(request: web.Request) -> web.Response:
        timeout = request.app[SETTINGS].readiness_timeout
        ok, body = await request.app[HEALTH].readiness(
            timeout, warn_fails=request.app[SETTINGS].health_warn_fails_readiness
        )
        return web.Response(
            body=orjson.dumps(body), status=200 if ok else 503, content_type="application/json"
        )

    scrapers = TrustedProxies(settings.metrics_allow)  # the networks, matched on the peer

    async def metrics(request: web.Request) -> web.Response:
        if not scrapers.trusts(request.remote):
            authenticator = request.app.get(AUTHENTICATOR)
            if authenticator is None:
                raise Forbidden("Metrics are served to the monitoring network only")
            principal = await authenticator.authenticate(request.headers.get("Authorization"))
            authenticator.authorize(principal, (METRICS_PERMISSION,))
        return await metrics_handler(request.app[METRICS])

    async def openapi(request: web.Request) -> web.Response:
        if "spec" not in spec_cache:
            routes: list[RouteDef] = request.app[ROUTES]
            document = build_openapi(routes, title=title, version=version, description=description)
            spec_cache["spec"] = orjson.dumps(document)
        return web.Response(body=spec_cache["spec"], content_type="application/json")

    async def asyncapi(request: web.Request) -> web.Response:
        if "asyncapi" not in spec_cache:
            bus = request.app.get(BUS)
            if bus is None:
                document: dict[str, Any] = {
                    "asyncapi": "3.0.0",
                    "info": {"title": f"{title} events", "version": version},
                    "channels": {},
                    "operations": {},
                }
            else:
                document = build_asyncapi(bus, title=f"{title} events", version=version)
            spec_cache["asyncapi"] = orjson.dumps(document)
        return web.Response(body=spec_cache["asyncapi"], content_type="application/json")

    async def docs(request: web.Request) -> web.Response:
        return docs_page(title)

    async def docs_static(request: web.Request) -> web.StreamResponse:
        path = SWAGGER_ASSETS.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    async def docs_init(request: web.Request) -> web.Response:
        return web.Response(text=DOCS_INIT_JS, content_type="application/javascript")

    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
    app.router.add_get("/metrics", metrics, name="metrics")
    app.router.add_get("/openapi.json", openapi, name="openapi")
    app.router.add_get("/asyncapi.json", asyncapi, name="asyncapi")
    app.router.add_get("/docs", docs, name="docs")
    app.router.add_get("/docs/init.js", docs_init, name="docs_init")
    app.router.add_get("/docs/static/{name}", docs_static, name="docs_static")

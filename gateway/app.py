"""Wiring of the gateway: core's operational app, the edge middleware, a proxy route per prefix.

``create_gateway_app`` builds the application; ``run_gateway`` serves it (HTTPS with a
certificate and key). The gateway has no database: Redis (rate limits, revocations) and its
upstream pools are its resources.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from core import HEALTH, METRICS, REDIS, Router, create_app, token_codec
from core.app import CleanupCtx
from core.auth import Authenticator, RevocationStore
from core.bus import Transport, bus_ctx
from core.discovery import Discovery, DnsResolver, is_discovered
from core.health import Check
from core.keys import AUTHENTICATOR
from core.redis import create_redis
from gateway.auth import EdgeAuth
from gateway.balancer import BreakerConfig, ConcurrencyLimit, Pool
from gateway.edge import edge_middleware, rate_limit_hook
from gateway.headers import Forwarding
from gateway.health import HealthChecker
from gateway.keys import EDGE_AUTH, GATEWAY_METRICS, OPENAPI, POOLS, RATE_LIMITER
from gateway.metrics import GatewayMetrics
from gateway.openapi import OpenAPIMerger
from gateway.proxy import PROXY, Proxy, create_session
from gateway.ratelimit import RateLimiter, RatePolicies, RatePolicy
from gateway.retry import RetryBudget
from gateway.routing import Route, RouteRule, RouteTable
from gateway.settings import Settings, parse_rate
from gateway.tls import hsts_hook

__all__ = ["create_gateway_app", "run_gateway"]

_openapi_router = Router(tags=["gateway"])


@_openapi_router.get("/openapi.json", operation_id="gateway_openapi")
async def _merged_openapi(request: web.Request) -> web.Response:
    """The OpenAPI document of every service behind the gateway."""
    body = await request.app[OPENAPI].document()
    return web.Response(body=body, content_type="application/json")


def _pools(settings: Settings, table: RouteTable, metrics: GatewayMetrics) -> dict[str, Pool]:
    urls = settings.upstreams()
    unknown = table.upstreams - set(urls)
    if unknown:
        raise ValueError(f"routes lead to unknown upstreams: {sorted(unknown)}")
    config = BreakerConfig(
        eject_after=settings.eject_after,
        cooldown=settings.breaker_cooldown,
        max_cooldown=settings.breaker_max_cooldown,
        unhealthy_threshold=settings.unhealthy_threshold,
        healthy_threshold=settings.healthy_threshold,
    )
    return {
        name: Pool(
            name,
            [url for url in instances if not is_discovered(url)],  # the others: _discoveries
            config=config,
            budget=RetryBudget(
                ratio=settings.retry_budget_ratio,
                min_per_second=settings.retry_budget_min_per_second,
            ),
            metrics=metrics,
            panic_routing=settings.upstream_panic_routing,
            limit=ConcurrencyLimit(
                settings.upstream_max_concurrency,
                queue=settings.upstream_queue_size,
                queue_timeout=settings.upstream_queue_timeout,
            ),
        )
        for name, instances in urls.items()
    }


def _discoveries(settings: Settings, pools: dict[str, Pool]) -> list[Discovery]:
    """A ``Discovery`` for each pool with ``dns+`` instances, feeding it and fed by its
    failures."""
    resolver = DnsResolver(settings.discovery_nameservers, timeout=settings.health_timeout)
    found = []
    for name, specs in settings.upstreams().items():
        pool = pools.get(name)
        if pool is None or not any(is_discovered(spec) for spec in specs):
            continue
        discovery = Discovery(
            specs, resolver, interval=settings.discovery_interval, on_change=pool.update, label=name
        )
        pool.on_failure = discovery.refresh_soon
        found.append(discovery)
    return found


def _resources_ctx(
    settings: Settings, table: RouteTable, public: RouteRule, forwarding: Forwarding
) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        metrics, pools = app[GATEWAY_METRICS], app[POOLS]
        # Short timeouts: a dead Redis must cost a request little (rate limits fail open,
        # revocation checks fail closed, both quickly).
        timeout = max(settings.rate_limit_timeout, 0.05)
        # A bounded pool that waits for a free connection (REDIS_MAX_CONNECTIONS,
        # REDIS_POOL_TIMEOUT): an authenticated request holds two at once (its rate-limit hit
        # and its revocation check), and redis-py's default pool refused past 100 in use.
        redis = create_redis(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            pool_timeout=settings.redis_pool_timeout,
            socket_timeout=timeout,
            connect_timeout=timeout,
        )
        app[REDIS] = redis

        async def redis_check() -> None:
            await redis.ping()

        app[HEALTH].add("redis", redis_check)
        for name in settings.ready_upstreams:
            app[HEALTH].add(f"upstream:{name}", _pool_check(pools[name]))
        session = create_session(settings)
        stream_session = create_session(settings, streams=True)  # never the API's pool
        checks_session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=settings.health_timeout),
        )
        discoveries = _discoveries(settings, pools)
        checker = HealthChecker(
            pools.values(),
            checks_session,
            path=settings.health_path,
            interval=settings.health_interval,
            timeout=settings.health_timeout,
        )
        try:
            codec = token_codec(settings)
            revocations = RevocationStore(
                redis, namespace=settings.redis_namespace, access_ttl=settings.access_token_ttl
            )
            app[EDGE_AUTH] = EdgeAuth(codec, revocations, public=public, metrics=metrics)
            # For the gateway's own routes that need a token (``/metrics`` from outside).
            app[AUTHENTICATOR] = Authenticator(codec, revocations)
            if settings.rate_limit_enabled:
                app[RATE_LIMITER] = RateLimiter(
                    redis,
                    namespace=settings.rate_namespace,
                    timeout=settings.rate_limit_timeout,
                    cooldown=settings.rate_limit_cooldown,
                    metrics=metrics,
                    sync_interval=settings.rate_limit_sync_interval,
                    local_share=settings.rate_limit_local_share,
                )
                app[RATE_LIMITER].start()
            app[PROXY] = Proxy(
                pools=pools,
                session=session,
                settings=settings,
                metrics=metrics,
                forwarding=forwarding,
                stream_session=stream_session,
                revocations=revocations,
            )
            app[OPENAPI] = OpenAPIMerger(
                pools=pools,
                session=checks_session,
                services=settings.openapi_upstreams,
                table=table,
                public=public,
                ttl=settings.openapi_cache_ttl,
                timeout=settings.health_timeout,
            )
            for discovery in discoveries:
                await discovery.start()
            await checker.start()
            yield
        finally:
            for discovery in discoveries:
                await discovery.stop()
            limiter = app.get(RATE_LIMITER)
            if limiter is not None:
                await limiter.aclose()
            await checker.stop()
            await session.close()
            await stream_session.close()
            await checks_session.close()
            app[HEALTH].remove("redis")
            await redis.aclose()

    return ctx


def _pool_check(pool: Pool) -> Check:
    async def check() -> None:
        if not pool.healthy:
            raise RuntimeError(f"no healthy instance of {pool.name}")

    return check


def _proxy_handler(route: Route) -> Handler:
    async def proxy(request: web.Request) -> web.StreamResponse:
        return await request.app[PROXY].forward(request, route)

    return proxy


def create_gateway_app(
    settings: Settings | None = None, *, transport: Transport | None = None
) -> web.Application:
    """The gateway application: ``/healthz``, ``/readyz``, ``/metrics``, the merged
    ``/openapi.json`` and ``/docs``, and every route of the routing table proxied.

    It publishes its ``metrics.snapshot`` on the bus (``transport``: share one, as the
    single-process mode does), so the dashboard shows the traffic at the edge too; the broker
    being away never makes the gateway unready."""
    settings = settings or Settings()
    table = RouteTable(settings.routes)
    public = RouteRule(settings.public_routes)
    forwarding = Forwarding(settings.trusted_proxies)
    default_limit, default_period = parse_rate(settings.rate_limit_default)
    policies = RatePolicies(
        default=RatePolicy("default", default_limit, default_period),
        strict=parse_rate(settings.rate_limit_auth),
        strict_routes=settings.rate_limit_auth_routes,
        exempt=settings.rate_limit_exempt,
    )
    app = create_app(
        "gateway",
        settings,
        routers=[_openapi_router],
        resources=[
            _resources_ctx(settings, table, public, forwarding),
            bus_ctx(settings, transport=transport, ready_check=False),
        ],
        middlewares=[edge_middleware(table=table, policies=policies, forwarding=forwarding)],
        title="aioshop gateway",
        description="The single public entry point of aioshop.",
    )
    metrics = GatewayMetrics(app[METRICS].registry)
    app[GATEWAY_METRICS] = metrics
    app[POOLS] = _pools(settings, table, metrics)
    for route in table.routes:
        app.router.add_route("*", route.pattern, _proxy_handler(route))
    app.on_response_prepare.append(rate_limit_hook)
    app.on_response_prepare.append(hsts_hook(settings.hsts_max_age))
    return app


def run_gateway(
    settings: Settings | None = None, certfile: str | None = None, keyfile: str | None = None
) -> None:
    """Serve the gateway on ``settings.host:settings.port`` until SIGINT/SIGTERM, on uvloop;
    over HTTPS (with HSTS) when ``certfile`` and ``keyfile`` are given (``core.runner``)."""
    from core.runner import run, server_ssl_context  # looked up at call time: patchable

    if (certfile is None) != (keyfile is None):
        raise ValueError("give both certfile and keyfile, or neither")
    settings = settings or Settings()
    context = server_ssl_context(certfile, keyfile) if certfile and keyfile else None
    run(create_gateway_app(settings), host=settings.host, port=settings.port, ssl_context=context)

"""Typed keys for the gateway's state on its application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.auth import EdgeAuth
    from gateway.balancer import Pool
    from gateway.metrics import GatewayMetrics
    from gateway.openapi import OpenAPIMerger
    from gateway.ratelimit import RateLimiter

__all__ = ["EDGE_AUTH", "GATEWAY_METRICS", "OPENAPI", "POOLS", "RATE_LIMITER"]

POOLS: web.AppKey[dict[str, Pool]] = web.AppKey("gateway_pools")
GATEWAY_METRICS: web.AppKey[GatewayMetrics] = web.AppKey("gateway_metrics")
EDGE_AUTH: web.AppKey[EdgeAuth] = web.AppKey("gateway_edge_auth")
RATE_LIMITER: web.AppKey[RateLimiter] = web.AppKey("gateway_rate_limiter")
OPENAPI: web.AppKey[OpenAPIMerger] = web.AppKey("gateway_openapi")

"""The edge middleware: who is calling, how often, and may they pass.

For every request it (1) verifies the bearer token, if any, without I/O; (2) counts the request
against its rate-limit policy, per user when the token is valid, else per client IP, and checks
the token's revocation in Redis at the same time; (3) on a proxied route, refuses a missing,
invalid or revoked token unless the route is public. Counting comes before refusing, so floods of
bad tokens are limited too and every response carries ``RateLimit-*`` headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from core.auth import Principal
from core.errors import ProblemError, TooManyRequests, Unauthorized
from gateway.headers import Forwarding
from gateway.keys import EDGE_AUTH, RATE_LIMITER
from gateway.ratelimit import (
    RATE_DECISION,
    RateDecision,
    RatePolicies,
    rate_limit_headers,
)
from gateway.routing import RouteTable

__all__ = ["IDENTITY", "edge_middleware", "rate_limit_hook"]

IDENTITY = web.RequestKey("gateway_identity", Principal)


def edge_middleware(
    *, table: RouteTable, policies: RatePolicies, forwarding: Forwarding
) -> Middleware:
    """The middleware; it finds the ``EdgeAuth`` and ``RateLimiter`` (if rate limiting is on)
    the gateway's resources put on the application at start-up."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        auth = request.app[EDGE_AUTH]
        limiter = request.app.get(RATE_LIMITER)
        route = table.match(request.path)
        principal, auth_error = (
            auth.identify(request.headers.get("Authorization")) if route else (None, None)
        )
        policy = policies.select(request.method, request.path)
        revocation: ProblemError | None = None
        decision: RateDecision | None = None
        if policy is not None and limiter is not None:
            identity = (
                f"user:{principal.user_id}"
                if principal is not None and policy.by_user
                else f"ip:{forwarding.client_ip(request)}"
            )
            hit = limiter.hit(
                policy.name, identity, limit=policy.limit, period=policy.period, local=policy.local
            )
            if principal is not None:
                decision, revocation = await _together(hit, auth.ensure_active(principal))
            else:
                decision = await hit
            if decision is None:  # failed open: nothing was counted, the full quota stands
                decision = RateDecision(
                    policy=policy.name,
                    allowed=True,
                    limit=policy.limit,
                    period=policy.period,
                    remaining=policy.limit,
                    reset=0,
                    retry_after=0,
                )
        elif principal is not None:
            revocation = await _catch(auth.ensure_active(principal))
        if decision is not None:
            request[RATE_DECISION] = decision
            if not decision.allowed:
                raise TooManyRequests(
                    "Too many requests; retry later", headers=rate_limit_headers(decision)
                )
        if route is None:
            return await handler(request)
        public = auth.public.matches(request.method, request.path)
        if revocation is not None:
            if public:  # revoked, or Redis cannot tell: the caller is anonymous here
                principal = None
            elif isinstance(revocation, Unauthorized):
                raise auth.reject(revocation)
            else:  # fail closed: a logged-out token must not pass because Redis blinked
                raise revocation
        if principal is None and not public:
            raise auth.reject(auth_error)
        if principal is not None:
            request[IDENTITY] = principal
        return await handler(request)

    return middleware


async def _catch(check: Awaitable[None]) -> ProblemError | None:
    try:
        await check
    except ProblemError as exc:
        return exc
    return None


async def _together(
    hit: Awaitable[RateDecision | None], check: Awaitable[None]
) -> tuple[RateDecision | None, ProblemError | None]:
    return await asyncio.gather(hit, _catch(check))


async def rate_limit_hook(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the request's ``RateLimit-*`` headers on whatever response."""
    decision = request.get(RATE_DECISION)
    if decision is not None:
        response.headers.update(rate_limit_headers(decision))

"""The streaming reverse proxy: one shared client session, retries on another instance, relay.

Bodies up to ``buffer_bytes`` are read whole, both ways (one write, and a request body that can
be sent again on a retry); larger ones stream chunk by chunk, the request body capped at
``max_body_bytes`` (413) even without a ``Content-Length``. Failures map to problem+json:
a refused connection to 503 (no healthy instance), a timeout to 504, anything else broken to 502.

Long-lived streams (``STREAM_ROUTES`` and WebSockets) go through a session of their own, so they
can never take the API's upstream connections; they are admitted by a ``StreamLimiter`` (per
client and in total, 429/503 past a limit) and ended after ``stream_max_lifetime`` seconds.
Every other request takes a place under its upstream's ``ConcurrencyLimit`` (``UPSTREAM_MAX_
CONCURRENCY``, a short bounded wait past it) or is shed at once: 503 with ``Retry-After``.

While tracing is on (``core.tracing``), each attempt is a client span of the request's server
span, and its ``traceparent`` replaces the client's in the headers sent upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict
from opentelemetry.trace import Span
from yarl import URL

from core import tracing
from core.app import METRICS_PERMISSION as OPERATOR_PERMISSION
from core.auth import Principal, RevocationStore
from core.errors import BadRequest, PayloadTooLarge, ProblemError, Unauthorized
from core.middleware import CORRELATION_ID
from core.middleware.errors import problem_from
from core.server import RequestBodyTimeout
from gateway.auth import identity_headers
from gateway.balancer import Instance, Pool
from gateway.edge import IDENTITY
from gateway.errors import BadGateway, GatewayTimeout, NoHealthyInstance, UpstreamOverloaded
from gateway.headers import Forwarding, response_headers
from gateway.metrics import GatewayMetrics
from gateway.routing import Route, has_dot_segments
from gateway.settings import Settings
from gateway.streams import StreamLease, StreamLimiter, StreamRoutes
from gateway.websocket import is_websocket, relay_websocket

__all__ = ["IDEMPOTENT_METHODS", "PROXY", "Proxy", "create_session"]

log = logging.getLogger("gateway.proxy")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_NO_BODY_STATUSES = frozenset({204, 304})
_FAILURE_STATUSES = frozenset({502, 503, 504})  # the instance (or what it needs) is unwell
_NOT_TRACED: contextlib.nullcontext[None] = contextlib.nullcontext()


def create_session(settings: Settings, *, streams: bool = False) -> aiohttp.ClientSession:
    """A client session of the proxy: a sized keep-alive pool, bytes passed through as is, no
    cookie jar (it would leak one client's cookies to the next). ``streams``: the separate pool
    of long-lived streams, sized to their total limit, instead of the API's."""
    connector = aiohttp.TCPConnector(
        limit=settings.stream_max_total if streams else settings.upstream_pool_size,
        limit_per_host=0 if streams else settings.upstream_pool_per_host,
        keepalive_timeout=settings.upstream_keepalive,
        ttl_dns_cache=10,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=(hdrs.USER_AGENT, hdrs.ACCEPT_ENCODING, hdrs.ACCEPT),
        timeout=aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=settings.upstream_connect_timeout
        ),
    )
    # aiohttp resends an idempotent request once, on its own, after a reset. The proxy retries by
    # itself (another instance, within the budget, never a POST that may have arrived), so that
    # is turned off, the way aiohttp's own TestClient does it.
    session._retry_connection = False
    return session


class _StreamedBody:
    """A request body relayed as it arrives, refused past ``limit`` bytes."""

    def __init__(self, content: aiohttp.StreamReader, limit: int) -> None:
        self.content = content
        self.limit = limit
        self.started = False
        self.too_large = False
        self.client_failed = False  # the client's side broke off: not the upstream's fault
        self.timed_out = False  # ... by not sending it within the server's body timeout

    @property
    def client_fault(self) -> bool:
        """Whether a failed attempt came from the client's body (too large, or cut off)."""
        return self.too_large or self.client_failed

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        size = 0
        while True:
            try:
                chunk = await self.content.readany()
            except BaseException as exc:
                self.client_failed = True
                self.timed_out = isinstance(exc, RequestBodyTimeout)
                raise
            if not chunk:
                return
            size += len(chunk)
            if size > self.limit:
                self.too_large = True
                raise PayloadTooLarge(f"The request body exceeds {self.limit} bytes")
            yield chunk


class _Failure(Exception):
    """An attempt failed: ``problem`` is what the client gets if no retry saves it."""

    def __init__(self, kind: str, problem: ProblemError, *, sent: bool) -> None:
        super().__init__(kind)
        self.kind = kind
        self.problem = problem
        self.sent = sent  # whether the request may have reached the upstream


class Proxy:
    """Forwards requests of each route to an instance of its upstream; ``session`` is the API's
    upstream pool, ``stream_session`` the long-lived streams' (see ``create_session``)."""

    def __init__(
        self,
        *,
        pools: Mapping[str, Pool],
        session: aiohttp.ClientSession,
        settings: Settings,
        metrics: GatewayMetrics,
        forwarding: Forwarding,
        stream_session: aiohttp.ClientSession,
        revocations: RevocationStore | None = None,
    ) -> None:
        self.pools = pools
        self.revocations = revocations  # to check a long-lived WebSocket's token again
        self.session = session
        self.stream_session = stream_session  # long-lived streams never take the API's pool
        self.settings = settings
        self.metrics = metrics
        self.forwarding = forwarding
        self.stream_routes = StreamRoutes(settings.stream_routes)
        self.streams = StreamLimiter.from_settings(settings, metrics)
        secret = settings.identity_secret
        self._secret = secret.get_secret_value().encode() if secret else None

    def _still_allowed(self, principal: Principal) -> Callable[[], Awaitable[bool]]:
        """Whether ``principal``'s token still holds: not expired, not revoked."""

        async def check() -> bool:
            if principal.expires_at <= time.time():
                return False
            if self.revocations is not None:
                try:
                    await self.revocations.ensure_active(principal)
                except Unauthorized:
                    return False
            return True

        return check

    async def forward(self, request: web.Request, route: Route) -> web.StreamResponse:
        """Send ``request`` to an instance of the route's upstream and relay the answer; a
        long-lived stream only if admitted, through the streams' own pool, for a bounded time."""
        if not self.stream_routes.matches(request):
            return await self._forward(request, route, None)
        principal = request.get(IDENTITY)
        try:
            if principal is not None:
                lease = self.streams.acquire(
                    f"user:{principal.user_id}",
                    authenticated=True,
                    operator=principal.has_permission(OPERATOR_PERMISSION),
                )
            else:
                client = f"ip:{self.forwarding.client_ip(request)}"
                lease = self.streams.acquire(client, authenticated=False)
        except ProblemError as exc:
            # Answered here: a refusal at a limit is expected (and counted in the metrics),
            # not an error to log once per request of a flood.
            return problem_from(request, exc)
        try:
            return await self._forward(request, route, lease)
        finally:
            lease.release()

    async def _forward(
        self, request: web.Request, route: Route, lease: StreamLease | None
    ) -> web.StreamResponse:
        if has_dot_segments(request.path):
            raise BadRequest("The path must not contain '.' or '..' segments")
        target = request.rel_url.raw_path_qs  # origin-form even for an absolute-form request
        if not target.startswith("/"):
            raise BadRequest("The request target must be a path")
        pool = self.pools[route.upstream]
        settings = self.settings
        body: bytes | _StreamedBody | None = None
        if request.body_exists:
            length = request.content_length
            if length is not None and length <= settings.buffer_bytes:
                body = await request.read()
            else:
                body = _StreamedBody(request.content, settings.max_body_bytes)
        principal = request.get(IDENTITY)
        headers = self.forwarding.upstream_headers(
            request,
            correlation_id=request[CORRELATION_ID],
            identity=identity_headers(principal, secret=self._secret) if principal else {},
            keep_length=isinstance(body, _StreamedBody),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.request_timeout
        # Streams are bounded by their own limiter; every other request takes a place under the
        # upstream's concurrency limit (a short wait at most), or is shed with 503 at once.
        limit = pool.limit if lease is None else None
        if limit is not None and not limit.try_acquire():
            refused = await limit.wait()
            if refused is not None:
                self.metrics.upstream_shed.labels(pool.name, refused).inc()
                overloaded = UpstreamOverloaded(
                    pool.name, retry_after=settings.upstream_retry_after
                )
                return problem_from(request, overloaded)  # expected at a limit: not logged
        try:
            idempotent = request.method in IDEMPOTENT_METHODS
            pool.budget.record_request()
            instance = pool.pick()
            if instance is None:
                self.metrics.no_instance.labels(pool.name).inc()
                raise NoHealthyInstance(pool.name)
            session = self.session if lease is None else self.stream_session
            if is_websocket(request):
                return await relay_websocket(
                    request,
                    instance,
                    headers,
                    session=session,
                    handshake_timeout=settings.upstream_timeout,
                    lifetime=settings.stream_max_lifetime,
                    on_expired=self.metrics.streams_expired.inc,
                    still_allowed=self._still_allowed(principal) if principal else None,
                    check_every=settings.stream_recheck_interval,
                )
            tried: list[Instance] = []
            while True:
                tried.append(instance)
                try:
                    upstream = await self._attempt(
                        request, route, instance, target, headers, body, deadline, session
                    )
                except _Failure as exc:
                    if isinstance(body, _StreamedBody) and body.too_large:
                        raise PayloadTooLarge(
                            f"The request body exceeds {settings.max_body_bytes} bytes"
                        ) from None
                    if isinstance(body, _StreamedBody) and body.timed_out:
                        raise RequestBodyTimeout() from None
                    if isinstance(body, _StreamedBody) and body.client_failed:
                        raise BadRequest("The request body was cut off") from None
                    replayable = not (isinstance(body, _StreamedBody) and body.started)
                    retryable = replayable and (
                        not exc.sent or (idempotent and exc.kind == "broken")
                    )
                    if not retryable or len(tried) > settings.retry_attempts:
                        raise exc.problem from None
                    # Another instance; with none left, a reset may come from a stale keep-alive
                    # connection, so the same instance may be tried again, on a new one.
                    exclude = tried if pool.available(tried) or exc.kind != "broken" else ()
                    if loop.time() >= deadline or not pool.available(exclude):
                        raise exc.problem from None
                    if not pool.budget.try_retry():
                        self.metrics.retry_budget_exhausted.labels(pool.name).inc()
                        raise exc.problem from None
                    following = pool.pick(exclude=exclude)
                    if following is None:
                        raise exc.problem from None
                    self.metrics.retries.labels(pool.name, exc.kind).inc()
                    instance = following
                    continue
                lifetime = settings.stream_max_lifetime if lease is not None else None
                return await self._relay(request, instance, upstream, deadline, lifetime)
        finally:
            if limit is not None:
                limit.release()

    async def _attempt(
        self,
        request: web.Request,
        route: Route,
        instance: Instance,
        target: str,
        headers: Mapping[str, str],
        body: bytes | _StreamedBody | None,
        deadline: float,
        session: aiohttp.ClientSession,
    ) -> aiohttp.ClientResponse:
        loop = asyncio.get_running_loop()
        start = loop.time()
        upstream_name = instance.upstream
        failure: _Failure
        span: contextlib.AbstractContextManager[Span | None] = _NOT_TRACED
        if tracing.enabled():  # a client span of this attempt, whose traceparent goes upstream
            headers = CIMultiDict(headers)
            span = tracing.client_span(
                request.method,
                instance.url + request.path,
                headers,
                service="gateway",
                peer=upstream_name,
                **{"aioshop.instance": instance.id},
            )
        try:
            url = URL(instance.url + target, encoded=True)
            data = body.chunks() if isinstance(body, _StreamedBody) else body
            with span as traced:
                timeout = min(deadline, start + self.settings.upstream_timeout)
                async with asyncio.timeout_at(timeout):
                    upstream = await session.request(
                        request.method, url, headers=headers, data=data, allow_redirects=False
                    )
                tracing.record_status(traced, upstream.status)
        except asyncio.CancelledError:
            instance.end(None)
            raise
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            failure = _Failure("connect", NoHealthyInstance(upstream_name), sent=False)
            cause: BaseException = exc
        except TimeoutError as exc:
            seconds = min(self.settings.upstream_timeout, self.settings.request_timeout)
            detail = f"The {upstream_name} service did not answer within {seconds:g} s"
            failure = _Failure("timeout", GatewayTimeout(detail), sent=True)
            cause = exc
        except (aiohttp.ClientError, OSError) as exc:
            detail = f"The {upstream_name} service failed to answer properly"
            failure = _Failure("broken", BadGateway(detail), sent=True)
            cause = exc
        except BaseException:  # not the upstream's failure: free its slot, judge nothing
            instance.end(None)
            raise
        else:
            self.metrics.count_attempt(
                route.prefix, upstream_name, instance.id, str(upstream.status)
            )
            self.metrics.observe_upstream(route.prefix, upstream_name, loop.time() - start)
            return upstream
        if isinstance(body, _StreamedBody) and body.client_fault:
            instance.end(None)  # the client's body failed, not the instance
            failure.kind = "client"
        else:
            instance.end(False)
        self.metrics.count_attempt(route.prefix, upstream_name, instance.id, failure.kind)
        log.warning("attempt on %s failed (%s): %r", instance.id, failure.kind, cause)
        raise failure from cause

    async def _relay(
        self,
        request: web.Request,
        instance: Instance,
        upstream: aiohttp.ClientResponse,
        deadline: float,
        lifetime: float | None,
    ) -> web.StreamResponse:
        ok: bool | None = upstream.status not in _FAILURE_STATUSES
        if upstream.status == 503 and not instance.healthy:
            # Reached while the pool panics: the instance is known to miss a dependency, and
            # its 503 says so; it must not be ejected for it from the only ones that answer.
            ok = None
        headers = response_headers(upstream.headers)
        length = upstream.content_length
        bodiless = request.method == "HEAD" or upstream.status in _NO_BODY_STATUSES
        if bodiless or (length is not None and length <= self.settings.buffer_bytes):
            # Nothing is sent to the client yet: the request's deadline still holds (504).
            loop = asyncio.get_running_loop()
            read_deadline = min(deadline, loop.time() + self.settings.upstream_read_timeout)
            try:
                if upstream.content.is_eof():  # a small body came with the headers: no wait
                    data = await upstream.read()
                else:
                    async with asyncio.timeout_at(read_deadline):
                        data = await upstream.read()
            except asyncio.CancelledError:
                instance.end(None)
                upstream.close()
                raise
            except TimeoutError as exc:
                instance.end(False)
                upstream.close()
                log.warning("%s stalled in the middle of its response: %r", instance.id, exc)
                raise GatewayTimeout(
                    f"The {instance.upstream} service did not finish its answer in time"
                ) from exc
            except (aiohttp.ClientError, OSError) as exc:
                instance.end(False)
                upstream.close()
                log.warning("reading from %s failed: %r", instance.id, exc)
                raise BadGateway(
                    f"The {instance.upstream} service failed to answer properly"
                ) from exc
            finally:
                upstream.release()
            instance.end(ok)
            if bodiless:
                return web.StreamResponse(
                    status=upstream.status, reason=upstream.reason, headers=headers
                )
            headers.popall(hdrs.CONTENT_LENGTH, None)
            return web.Response(
                status=upstream.status, reason=upstream.reason, headers=headers, body=data
            )
        return await self._stream(request, instance, upstream, headers, ok, lifetime)

    async def _stream(
        self,
        request: web.Request,
        instance: Instance,
        upstream: aiohttp.ClientResponse,
        headers: Mapping[str, str],
        ok: bool | None,
        lifetime: float | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=headers
        )
        verdict: bool | None = None
        loop = asyncio.get_running_loop()
        expires = None if lifetime is None else loop.time() + lifetime
        try:
            await response.prepare(request)
            while True:
                read_until = loop.time() + self.settings.upstream_read_timeout
                try:
                    async with asyncio.timeout_at(min(read_until, expires or read_until)):
                        chunk = await upstream.content.readany()
                except TimeoutError:
                    if expires is not None and loop.time() >= expires:
                        verdict = ok
                        return await self._expire(request, upstream, response)
                    verdict = False
                    log.warning("%s stalled in the middle of a streamed body", instance.id)
                    if request.transport is not None:
                        request.transport.close()
                    return response
                except (aiohttp.ClientError, OSError) as exc:
                    # Headers are gone already: cut the client's connection so it sees a
                    # truncated body, never a complete-looking one.
                    verdict = False
                    log.warning("%s broke off a streamed body: %r", instance.id, exc)
                    if request.transport is not None:
                        request.transport.close()
                    return response
                if not chunk:
                    break
                await response.write(chunk)
            await response.write_eof()
            verdict = ok
            return response
        except ConnectionResetError:  # the client went away: no verdict on the instance
            return response
        finally:
            if verdict and upstream.content.is_eof():
                upstream.release()
            else:
                upstream.close()
            instance.end(verdict)

    async def _expire(
        self, request: web.Request, upstream: aiohttp.ClientResponse, response: web.StreamResponse
    ) -> web.StreamResponse:
        """End a stream at its maximum lifetime: cleanly when the body is chunked (an
        EventSource then reconnects), cut when a length was promised that it will not get."""
        self.metrics.streams_expired.inc()
        upstream.close()
        if response.content_length is None:  # chunked, or delimited by closing: a clean end
            await response.write_eof()
        elif request.transport is not None:
            request.transport.close()
        return response


# Defined beside the class it holds: gateway.keys would otherwise import this module, which
# imports gateway.edge, which imports gateway.keys.
PROXY = web.AppKey("gateway_proxy", Proxy)

"""The streaming reverse proxy: one shared client session, retries on another instance, relay.

Bodies up to ``buffer_bytes`` are read whole, both ways (one write, and a request body that can
be sent again on a retry); larger ones stream chunk by chunk, the request body capped at
``max_body_bytes`` (413) even without a ``Content-Length``. Failures map to problem+json:
a refused connection to 503 (no healthy instance), a timeout to 504, anything else broken to 502.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp import hdrs, web
from yarl import URL

from core.errors import BadRequest, PayloadTooLarge, ProblemError
from core.middleware import CORRELATION_ID
from gateway.auth import identity_headers
from gateway.balancer import Instance, Pool
from gateway.edge import IDENTITY
from gateway.errors import BadGateway, GatewayTimeout, NoHealthyInstance
from gateway.headers import Forwarding, response_headers
from gateway.metrics import GatewayMetrics
from gateway.routing import Route, has_dot_segments
from gateway.settings import Settings
from gateway.websocket import is_websocket, relay_websocket

__all__ = ["IDEMPOTENT_METHODS", "Proxy", "create_session"]

log = logging.getLogger("gateway.proxy")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_NO_BODY_STATUSES = frozenset({204, 304})
_FAILURE_STATUSES = frozenset({502, 503, 504})  # the instance (or what it needs) is unwell


def create_session(settings: Settings) -> aiohttp.ClientSession:
    """The one client session of the proxy: a sized keep-alive pool, bytes passed through as is,
    no cookie jar (it would leak one client's cookies to the next)."""
    connector = aiohttp.TCPConnector(
        limit=settings.upstream_pool_size,
        limit_per_host=settings.upstream_pool_per_host,
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
            except BaseException:
                self.client_failed = True
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
    """Forwards requests of each route to an instance of its upstream."""

    def __init__(
        self,
        *,
        pools: Mapping[str, Pool],
        session: aiohttp.ClientSession,
        settings: Settings,
        metrics: GatewayMetrics,
        forwarding: Forwarding,
    ) -> None:
        self.pools = pools
        self.session = session
        self.settings = settings
        self.metrics = metrics
        self.forwarding = forwarding
        secret = settings.identity_secret
        self._secret = secret.get_secret_value().encode() if secret else None

    async def forward(self, request: web.Request, route: Route) -> web.StreamResponse:
        """Send ``request`` to an instance of the route's upstream and relay the answer."""
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
        idempotent = request.method in IDEMPOTENT_METHODS
        pool.budget.record_request()
        instance = pool.pick()
        if instance is None:
            self.metrics.no_instance.labels(pool.name).inc()
            raise NoHealthyInstance(pool.name)
        if is_websocket(request):
            return await relay_websocket(
                request,
                instance,
                headers,
                session=self.session,
                handshake_timeout=settings.upstream_timeout,
            )
        tried: list[Instance] = []
        while True:
            tried.append(instance)
            try:
                upstream = await self._attempt(
                    request, route, instance, target, headers, body, deadline
                )
            except _Failure as exc:
                if isinstance(body, _StreamedBody) and body.too_large:
                    raise PayloadTooLarge(
                        f"The request body exceeds {settings.max_body_bytes} bytes"
                    ) from None
                if isinstance(body, _StreamedBody) and body.client_failed:
                    raise BadRequest("The request body was cut off") from None
                replayable = not (isinstance(body, _StreamedBody) and body.started)
                retryable = replayable and (not exc.sent or (idempotent and exc.kind == "broken"))
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
            return await self._relay(request, instance, upstream, deadline)

    async def _attempt(
        self,
        request: web.Request,
        route: Route,
        instance: Instance,
        target: str,
        headers: Mapping[str, str],
        body: bytes | _StreamedBody | None,
        deadline: float,
    ) -> aiohttp.ClientResponse:
        loop = asyncio.get_running_loop()
        start = loop.time()
        upstream_name = instance.upstream
        failure: _Failure
        try:
            url = URL(instance.url + target, encoded=True)
            data = body.chunks() if isinstance(body, _StreamedBody) else body
            async with asyncio.timeout_at(min(deadline, start + self.settings.upstream_timeout)):
                upstream = await self.session.request(
                    request.method, url, headers=headers, data=data, allow_redirects=False
                )
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
            self.metrics.upstream_requests.labels(
                route.prefix, upstream_name, instance.id, str(upstream.status)
            ).inc()
            self.metrics.upstream_latency.labels(route.prefix, upstream_name).observe(
                loop.time() - start
            )
            return upstream
        if isinstance(body, _StreamedBody) and body.client_fault:
            instance.end(None)  # the client's body failed, not the instance
            failure.kind = "client"
        else:
            instance.end(False)
        self.metrics.upstream_requests.labels(
            route.prefix, upstream_name, instance.id, failure.kind
        ).inc()
        log.warning("attempt on %s failed (%s): %r", instance.id, failure.kind, cause)
        raise failure from cause

    async def _relay(
        self,
        request: web.Request,
        instance: Instance,
        upstream: aiohttp.ClientResponse,
        deadline: float,
    ) -> web.StreamResponse:
        ok = upstream.status not in _FAILURE_STATUSES
        headers = response_headers(upstream.headers)
        length = upstream.content_length
        bodiless = request.method == "HEAD" or upstream.status in _NO_BODY_STATUSES
        if bodiless or (length is not None and length <= self.settings.buffer_bytes):
            # Nothing is sent to the client yet: the request's deadline still holds (504).
            loop = asyncio.get_running_loop()
            read_deadline = min(deadline, loop.time() + self.settings.upstream_read_timeout)
            try:
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
        return await self._stream(request, instance, upstream, headers, ok)

    async def _stream(
        self,
        request: web.Request,
        instance: Instance,
        upstream: aiohttp.ClientResponse,
        headers: Mapping[str, str],
        ok: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=headers
        )
        verdict: bool | None = None
        try:
            await response.prepare(request)
            while True:
                try:
                    async with asyncio.timeout(self.settings.upstream_read_timeout):
                        chunk = await upstream.content.readany()
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
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
            if verdict:
                upstream.release()
            else:
                upstream.close()
            instance.end(verdict)

"""HTTP servers that slow or idle clients cannot hold: header-read, body-read and idle timeouts.

aiohttp's ``RequestHandler`` has an idle keep-alive timeout (by default about an hour) and nothing
else: a client sending its request head one byte at a time, or a body that never ends, keeps a
connection (and whatever it holds) as long as it likes. ``GuardedRequestHandler`` adds:

- a **header timeout**: the head of a request (request line and headers) must be complete within
  ``header`` seconds of its first byte; the clock starts with that byte (or, for bytes pipelined
  during a response, when that response is finished). Past it the client gets a bare
  ``408 Request Timeout`` and the connection is closed;
- a **body timeout**: the body must be received within ``body`` seconds of the end of the head.
  Past it, a read of the body raises ``RequestBodyTimeout`` (a 408, which ``core``'s error
  middleware turns into problem+json) and the connection is not kept alive;
- the **keep-alive timeout**: aiohttp's own, set to ``keepalive`` seconds: a connection idle
  between requests (or opened and never used) is closed.

It also answers a request that cannot be parsed as HTTP (a request line or header over aiohttp's
8 KB limit, a malformed head) with problem+json like every other error, where aiohttp would send
text/plain: such a request never reaches the application's middleware.

``app_runner`` builds an ``AppRunner`` whose connections use it; ``core.runner.serve`` is the one
place servers start.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from core.middleware.correlation import CORRELATION_HEADER
from core.middleware.security import API_CSP, SECURITY_HEADERS, SERVER_NAME
from core.settings import BaseServiceSettings

__all__ = [
    "GuardedRequestHandler",
    "GuardedServer",
    "RequestBodyTimeout",
    "ServerTimeouts",
    "app_runner",
]

_HEAD_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)


@dataclass(frozen=True, slots=True)
class ServerTimeouts:
    """Seconds a client has to send a request head, to send its body, and to stay idle."""

    header: float = 10.0
    body: float = 30.0
    keepalive: float = 15.0

    def __post_init__(self) -> None:
        if min(self.header, self.body, self.keepalive) <= 0:
            raise ValueError("every server timeout must be positive")

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> ServerTimeouts:
        """The ``HTTP_HEADER_TIMEOUT``, ``HTTP_BODY_TIMEOUT`` and ``HTTP_KEEPALIVE_TIMEOUT``."""
        return cls(
            header=settings.http_header_timeout,
            body=settings.http_body_timeout,
            keepalive=settings.http_keepalive_timeout,
        )


class RequestBodyTimeout(web.HTTPRequestTimeout, TimeoutError):
    """The request body did not arrive in time (408).

    A ``TimeoutError`` too, so that aiohttp's lingering read of an unread body after the response
    treats it as the end of waiting rather than as a crash of the connection.
    """


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler with header and body deadlines (see the module docstring).

    It follows ``aiohttp.web_protocol.RequestHandler`` of aiohttp 3.14 closely (``_messages``,
    ``_request_count``, ``_upgraded``, ``_payload_parser``, ``_process_keepalive``): the tests in
    ``tests/core/test_server.py`` drive real sockets and fail if those change meaning.
    """

    def __init__(
        self, manager: web.Server, *, header_timeout: float, body_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._body_timeout = body_timeout
        # True between requests: the next byte received begins a new request head.
        self._awaiting_head = True
        # Head bytes arrived while a response was still being sent: timed once it is finished.
        self._head_pending = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        """Start the head's clock on its first byte; stop it when the head is parsed."""
        plain_http = self._payload_parser is None and not self._upgraded
        if data and plain_http and self._awaiting_head and self._head_timer is None:
            if self._request_in_progress:
                self._head_pending = True
            else:
                self._start_head_timer()
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads and self._messages:
            self._head_received(self._messages[-1][1])

    def connection_lost(self, exc: BaseException | None) -> None:
        """Cancel the deadlines with the connection."""
        self._cancel_head_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """Send the response; a head that began arriving meanwhile is timed from now on."""
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            if self._head_pending and self._head_timer is None and not self._messages:
                self._start_head_timer()
            self._head_pending = False

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse or serve: problem+json, and the connection closes.

        A 4xx here is the client's malformed head, logged at debug level (the public internet
        sends plenty); anything else keeps aiohttp's logging with its traceback.
        """
        if status >= 500:
            # aiohttp's own: it logs the exception and raises if a response already started.
            super().handle_error(request, status, exc, message)
        elif request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send an error response")
        else:
            self.logger.debug("unparseable request from %s: %r", request.remote, exc)
        return _unparseable_response(status, exc)

    def _process_keepalive(self) -> None:
        # A head is arriving: its own deadline governs, the idle one must not cut it short.
        if self._head_timer is not None:
            self._keepalive_handle = None
            return
        super()._process_keepalive()

    def _start_head_timer(self) -> None:
        self._head_timer = self._loop.call_later(self._header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _head_received(self, payload: StreamReader) -> None:
        self._cancel_head_timer()
        self._head_pending = False
        self._awaiting_head = False
        self._cancel_body_timer()
        if payload.is_eof():
            self._awaiting_head = True
            return
        self._body_timer = self._loop.call_later(self._body_timeout, self._body_timed_out, payload)
        payload.on_eof(self._body_received)

    def _body_received(self) -> None:
        self._cancel_body_timer()
        self._awaiting_head = True

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._force_close or self._close or self.transport is None:
            return
        self.logger.debug("request head not received within %s s: closing", self._header_timeout)
        if not self._request_in_progress:
            self.transport.write(_HEAD_TIMEOUT_RESPONSE)
        self.force_close()

    def _body_timed_out(self, payload: StreamReader) -> None:
        self._body_timer = None
        if payload.is_eof():
            return
        self.logger.debug("request body not received within %s s", self._body_timeout)
        payload.set_exception(RequestBodyTimeout(text="The request body did not arrive in time"))
        self.close()  # no keep-alive: what is left of the body would be read as a request


class GuardedServer(web.Server):
    """``aiohttp.web.Server`` whose connections are ``GuardedRequestHandler``s."""

    def __init__(self, *args: Any, timeouts: ServerTimeouts, **kwargs: Any) -> None:
        kwargs["keepalive_timeout"] = timeouts.keepalive
        super().__init__(*args, **kwargs)
        self.timeouts = timeouts

    def __call__(self) -> GuardedRequestHandler:
        """A handler for a new connection."""
        return GuardedRequestHandler(
            self,
            loop=self._loop,
            header_timeout=self.timeouts.header,
            body_timeout=self.timeouts.body,
            **self._kwargs,
        )


class _GuardedAppRunner(web.AppRunner):
    def __init__(self, app: web.Application, *, timeouts: ServerTimeouts, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.timeouts = timeouts

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return GuardedServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            timeouts=self.timeouts,
            **server._kwargs,
        )


def app_runner(
    app: web.Application, *, timeouts: ServerTimeouts | None = None, **kwargs: Any
) -> web.AppRunner:
    """An ``AppRunner`` for ``app`` whose connections keep ``timeouts`` (default: the ones of
    ``app[SETTINGS]`` when the app has settings, else ``ServerTimeouts()``). ``kwargs`` go to
    ``AppRunner`` (``access_log``, ``shutdown_timeout``...)."""
    if timeouts is None:
        from core.keys import SETTINGS

        settings = app.get(SETTINGS)
        timeouts = ServerTimeouts.from_settings(settings) if settings else ServerTimeouts()
    return _GuardedAppRunner(app, timeouts=timeouts, **kwargs)


def _unparseable_response(status: int, exc: BaseException | None) -> web.Response:
    """The problem+json answer to a request that never reached the application."""
    if isinstance(exc, LineTooLong):
        detail = "The request line or a header field is too long"
    elif isinstance(exc, HttpProcessingError) and status < 500:
        detail = "The request is not valid HTTP"
    else:
        detail = "The request could not be processed"
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    correlation_id = str(uuid.uuid4())
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": None,
        "correlation_id": correlation_id,
    }
    response = web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/problem+json",
        headers={
            **SECURITY_HEADERS,
            CORRELATION_HEADER: correlation_id,
            "Cache-Control": "no-store",
            "Content-Security-Policy": API_CSP,
            "Server": SERVER_NAME,
        },
    )
    response.force_close()
    return response

"""WebSocket pass-through (the live dashboard): the handshake proxied, then frames both ways.

``Upgrade`` and ``Connection`` are hop-by-hop: a plain proxy would turn a WebSocket handshake into
an ordinary GET. Here the gateway opens its own WebSocket to the instance with the same path and
forwarded headers, accepts the client's with the subprotocol the instance chose, and copies text
and binary frames until either side closes; it then closes the other with the same code. After
``lifetime`` seconds the gateway closes both with 1001 (going away): the client reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, hdrs, web
from yarl import URL

from core.errors import BadRequest, Forbidden, NotFound, ProblemError, Unauthorized
from gateway.balancer import Instance
from gateway.errors import BadGateway, GatewayTimeout, NoHealthyInstance

__all__ = ["is_websocket", "relay_websocket"]

log = logging.getLogger("gateway.websocket")

# Set again by the client library for its own handshake.
_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "content-length"}
)


def is_websocket(request: web.Request) -> bool:
    """Whether ``request`` asks to become a WebSocket."""
    return (
        request.method == "GET"
        and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        and "upgrade" in request.headers.get(hdrs.CONNECTION, "").lower()
    )


async def relay_websocket(
    request: web.Request,
    instance: Instance,
    headers: Mapping[str, str],
    *,
    session: aiohttp.ClientSession,
    handshake_timeout: float,
    lifetime: float | None = None,
    on_expired: Callable[[], object] | None = None,
    still_allowed: Callable[[], Awaitable[bool]] | None = None,
    check_every: float = 15.0,
) -> web.StreamResponse:
    """Open a WebSocket to ``instance`` and relay frames between it and the client, for at most
    ``lifetime`` seconds (then ``on_expired`` is called and both are closed with 1001).

    ``still_allowed`` is asked every ``check_every`` seconds whether the client's token still
    holds (not revoked, not expired); when it does not, both sides are closed with 1008."""
    protocols = [
        token.strip()
        for value in request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, [])
        for token in value.split(",")
        if token.strip()
    ]
    upstream_headers = {
        k: v
        for k, v in headers.items()
        if k.lower() not in _HANDSHAKE and k.lower() != "sec-websocket-protocol"
    }
    url = URL(instance.url + request.raw_path, encoded=True)
    try:
        async with asyncio.timeout(handshake_timeout):
            upstream = await session.ws_connect(
                url, headers=upstream_headers, protocols=protocols, autoping=True
            )
    except asyncio.CancelledError:
        instance.end(None)
        raise
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        instance.end(False)
        raise NoHealthyInstance(instance.upstream) from exc
    except TimeoutError as exc:
        instance.end(False)
        raise GatewayTimeout(f"The {instance.upstream} service did not answer in time") from exc
    except aiohttp.WSServerHandshakeError as exc:
        # The instance refused the upgrade (404, 401...): an answer, not a failure.
        instance.end(exc.status < 500)
        raise _refused(exc) from exc
    except (aiohttp.ClientError, OSError) as exc:
        instance.end(False)
        raise BadGateway(f"The {instance.upstream} service failed to answer properly") from exc
    client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else [])
    verdict: bool | None = None
    try:
        await client.prepare(request)
        to_upstream = asyncio.create_task(_pump(client, upstream))
        to_client = asyncio.create_task(_pump(upstream, client))
        tasks = {to_upstream, to_client}
        watch = None
        if still_allowed is not None:
            watch = asyncio.create_task(_watch(still_allowed, check_every))
            tasks.add(watch)
        done, pending = await asyncio.wait(
            tasks, timeout=lifetime, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        code: int
        if not done:
            code = WSCloseCode.GOING_AWAY
            if on_expired is not None:
                on_expired()
        elif watch is not None and watch in done:
            code = WSCloseCode.POLICY_VIOLATION
        else:
            code = (upstream.close_code if to_client in done else client.close_code) or 1000
        await upstream.close(code=code)
        await client.close(code=code)
        verdict = True
    finally:
        if not upstream.closed:
            await upstream.close()
        instance.end(verdict)
    return client


async def _watch(still_allowed: Callable[[], Awaitable[bool]], every: float) -> None:
    """Return once ``still_allowed`` says no (or cannot tell: fail closed)."""
    while True:
        await asyncio.sleep(every)  # the period of the check, not a wait for a condition
        try:
            if not await still_allowed():
                return
        except Exception:
            log.warning("WebSocket closed: its token could not be checked again")
            return


def _refused(exc: aiohttp.WSServerHandshakeError) -> ProblemError:
    if exc.status >= 500:
        return BadGateway("The upstream service refused the WebSocket")
    kinds: dict[int, type[ProblemError]] = {401: Unauthorized, 403: Forbidden, 404: NotFound}
    kind = kinds.get(exc.status, BadRequest)
    return kind("The upstream service refused the WebSocket")


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for message in source:
        if message.type is WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type is WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif message.type is WSMsgType.ERROR:
            log.warning("WebSocket error: %r", source.exception())
            return

"""A stand-in upstream for the gateway's tests, run as a real process (so SIGKILL is real)::

    python -m tests.gateway.fake_upstream --port N --name a

It answers any path; the last segments choose a behaviour:

- ``.../hang``: never answers; ``.../drop``: closes the connection without an answer;
  ``.../drop-on/<name>``: drops only on the instance called ``<name>``, answers elsewhere;
- ``.../bytes/<n>``: ``n`` bytes (``?chunked=1``: without a Content-Length);
- ``.../break-body``: headers and part of a body, then the connection is cut;
- ``.../stall-body``: headers (``Content-Length: 100``) and 10 bytes, then nothing, ever;
- ``.../status/<code>``: that status, as problem+json;
- ``.../ws``: a WebSocket echoing frames (subprotocol ``dash.v1``);
- ``.../stream``: a Server-Sent Events stream (``data: <name>`` first, then a comment line every
  ``?every=`` seconds, default 0.2) that never ends by itself;
- anything else: a JSON echo of the instance name, method, raw path, headers and body digest.

``GET /readyz`` passes until ``POST /_ready/off``; ``GET /_seen`` lists the requests received;
``GET /openapi.json`` is a small document of products and categories routes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from typing import Any

from aiohttp import WSMsgType, web

SEEN = web.AppKey("seen", list)
READY = web.AppKey("ready", dict)
NAME = web.AppKey("name", str)

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "fake products", "version": "1.0.0"},
    "paths": {
        "/api/v1/products/{product_id}": {
            "get": {
                "operationId": "get_product",
                "parameters": [
                    {
                        "name": "product_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/UserOut"}}
                        },
                    }
                },
            }
        },
        "/api/v1/categories": {
            "get": {"operationId": "register", "responses": {"200": {"description": "OK"}}}
        },
        "/api/v1/users/me": {  # not routed to products: the merge must leave it out
            "get": {"operationId": "stray", "responses": {"200": {"description": "OK"}}}
        },
    },
    "components": {
        "schemas": {
            # Same name as a users schema, different meaning: the merge must rename it.
            "UserOut": {"type": "object", "properties": {"sku": {"type": "string"}}},
        }
    },
}


async def readyz(request: web.Request) -> web.Response:
    if request.app[READY]["ok"]:
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "unavailable"}, status=503)


async def set_ready(request: web.Request) -> web.Response:
    request.app[READY]["ok"] = request.match_info["state"] == "on"
    return web.json_response(request.app[READY])


async def seen(request: web.Request) -> web.Response:
    return web.json_response(request.app[SEEN])


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


async def anything(request: web.Request) -> web.StreamResponse:
    app = request.app
    name = app[NAME]
    parts = request.path.rstrip("/").split("/")
    app[SEEN].append(
        {
            "method": request.method,
            "path": request.raw_path,
            "correlation_id": request.headers.get("X-Correlation-ID"),
        }
    )
    last = parts[-1]
    if last == "ws":
        return await echo_websocket(request)
    if last == "stream":
        return await event_stream(request)
    if last == "hang":
        await asyncio.Event().wait()
    if last == "drop" or (len(parts) > 1 and parts[-2] == "drop-on" and last == name):
        assert request.transport is not None
        request.transport.abort()
        await asyncio.Event().wait()  # the cancelled handler never answers
    if len(parts) > 1 and parts[-2] == "bytes":
        size = int(last)
        response = web.StreamResponse()
        response.content_type = "application/octet-stream"
        if not request.query.get("chunked"):
            response.content_length = size
        await response.prepare(request)
        block = b"x" * 65536
        sent = 0 if request.method != "HEAD" else size
        while sent < size:
            chunk = block[: min(len(block), size - sent)]
            await response.write(chunk)
            sent += len(chunk)
        await response.write_eof()
        return response
    if last == "break-body":
        response = web.StreamResponse()
        response.content_length = 1_000_000
        await response.prepare(request)
        await response.write(b"x" * 1000)
        assert request.transport is not None
        request.transport.abort()
        return response
    if last == "stall-body":
        response = web.StreamResponse()
        response.content_length = 100
        await response.prepare(request)
        await response.write(b"x" * 10)
        await asyncio.Event().wait()
    if len(parts) > 1 and parts[-2] == "status":
        code = int(last)
        return web.json_response(
            {"type": "about:blank", "title": "Fake", "status": code, "detail": "fake"},
            status=code,
            content_type="application/problem+json",
        )
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    headers: dict[str, list[str]] = {}
    for key, value in request.headers.items():
        headers.setdefault(key.lower(), []).append(value)
    return web.json_response(
        {
            "name": name,
            "method": request.method,
            "path": request.raw_path,
            "headers": headers,
            "body_size": size,
            "body_sha256": digest.hexdigest(),
        },
        headers={
            "Set-Cookie": f"fake={name}; Path=/",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "1",
        },
    )


async def event_stream(request: web.Request) -> web.StreamResponse:
    """An endless Server-Sent Events stream, as the dashboard's (chunked, no length)."""
    response = web.StreamResponse(headers={"Cache-Control": "no-store"})
    response.content_type = "text/event-stream"
    await response.prepare(request)
    await response.write(f"data: {request.app[NAME]}\n\n".encode())
    every = float(request.query.get("every", "0.2"))
    while True:
        await asyncio.sleep(every)  # the stream's own pace, as a heartbeat
        await response.write(b": ping\n\n")


async def echo_websocket(request: web.Request) -> web.WebSocketResponse:
    """Echo frames prefixed with the instance name; ``"close"`` closes with code 4000."""
    ws = web.WebSocketResponse(protocols=("dash.v1",))
    await ws.prepare(request)
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            if message.data == "close":
                await ws.close(code=4000)
                break
            await ws.send_str(f"{request.app[NAME]}:{message.data}")
        elif message.type is WSMsgType.BINARY:
            await ws.send_bytes(message.data[::-1])
    return ws


def create_fake_app(name: str) -> web.Application:
    """The fake upstream called ``name``."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[NAME] = name
    app[SEEN] = []
    app[READY] = {"ok": True}
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/healthz", readyz)
    app.router.add_post("/_ready/{state}", set_ready)
    app.router.add_get("/_seen", seen)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


def main() -> None:
    """Serve a fake upstream until SIGTERM."""
    import uvloop

    from core.runner import serve

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    app = create_fake_app(args.name)
    # Hanging handlers never finish: do not wait for them on SIGTERM.
    uvloop.run(serve(app, host="127.0.0.1", port=args.port, shutdown_timeout=0.2))


if __name__ == "__main__":
    main()

"""``core.runner``: the one server runner, on a real port: HTTPS with ``server_ssl_context``,
the clients' timeouts from the app's settings, and a graceful stop on SIGTERM (the request in
flight is answered, new connections are refused, the app's resources are closed)."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from core import BaseServiceSettings, create_app
from core.runner import Site, serve, serve_all, server_ssl_context
from core.testing import free_port, refuses_connections, wait_for
from tests.certificates import self_signed

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals"),
]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[str, str, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1, its key, and a client context trusting it
    (files are written and read here, outside the event loop)."""
    certfile, keyfile = self_signed(tmp_path)
    return str(certfile), str(keyfile), ssl.create_default_context(cafile=str(certfile))


@pytest.fixture
def contexts(certificate: tuple[str, str, ssl.SSLContext]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """The server's context (``server_ssl_context``) and a client's trusting it."""
    certfile, keyfile, client = certificate
    return server_ssl_context(certfile, keyfile), client


def test_the_server_context_needs_tls_1_2_and_loads_the_chain(
    tmp_path: Path, certificate: tuple[str, str, ssl.SSLContext]
) -> None:
    certfile, keyfile, _ = certificate
    context = server_ssl_context(certfile, keyfile)
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.get_ca_certs() == []  # a server context: no client certificates asked for
    with pytest.raises(FileNotFoundError):
        server_ssl_context(str(tmp_path / "missing.pem"), keyfile)


async def test_https_then_a_graceful_stop_on_sigterm(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    make_settings: Callable[..., BaseServiceSettings],
) -> None:
    server_context, client_context = contexts
    entered, release = asyncio.Event(), asyncio.Event()
    closed: list[str] = []

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.json_response({"secure": request.secure})

    async def resource(app: web.Application) -> AsyncIterator[None]:
        yield
        closed.append("resource")

    app = create_app("runner", make_settings(), resources=[resource])
    app.router.add_get("/slow", slow)
    port = free_port()
    urls: list[str] = []
    server = asyncio.create_task(
        serve(
            app,
            host="127.0.0.1",
            port=port,
            ready=urls.append,
            ssl_context=server_context,
        )
    )
    try:

        async def listening() -> bool:
            assert not server.done(), server
            return bool(urls)

        await wait_for(listening)
        assert urls == [f"https://127.0.0.1:{port}"]
        async with aiohttp.ClientSession() as session:
            health = await session.get(f"{urls[0]}/healthz", ssl=client_context)
            assert health.status == 200
            in_flight = asyncio.create_task(session.get(f"{urls[0]}/slow", ssl=client_context))
            await asyncio.wait_for(entered.wait(), 5)

            os.kill(os.getpid(), signal.SIGTERM)  # caught by serve's handler, not fatal
            await wait_for(lambda: refuses_connections(port))  # stopped accepting at once
            assert not server.done()  # but still draining the request in flight
            assert closed == []
            release.set()
            response = await asyncio.wait_for(in_flight, 5)
            assert response.status == 200
            assert await response.json() == {"secure": True}
        await asyncio.wait_for(server, 10)
        assert closed == ["resource"]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            assert not loop.remove_signal_handler(sig), f"{sig!r} still handled by serve"
    finally:
        release.set()
        if not server.done():
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)


async def test_several_apps_stop_accepting_then_the_hook_then_cleanup_last_first(
    make_settings: Callable[..., BaseServiceSettings],
) -> None:
    """``serve_all`` (the embedded mode): every site stops accepting before ``stopped`` runs,
    and the apps are torn down after it, the last site first."""
    order: list[str] = []
    ports = [free_port(), free_port()]

    def resource(name: str) -> Callable[[web.Application], AsyncIterator[None]]:
        async def ctx(app: web.Application) -> AsyncIterator[None]:
            yield
            order.append(f"cleanup {name}")

        return ctx

    async def stopped() -> None:
        assert [await refuses_connections(port) for port in ports] == [True, True]
        order.append("stopped")

    apps = [create_app(n, make_settings(), resources=[resource(n)]) for n in ("first", "last")]
    ready: list[list[str]] = []
    server = asyncio.create_task(
        serve_all(
            [Site(app, "127.0.0.1", port) for app, port in zip(apps, ports, strict=True)],
            ready=lambda sites: ready.append([site.url for site in sites]),
            stopped=stopped,
        )
    )

    async def listening() -> bool:
        assert not server.done(), server
        return bool(ready)

    await wait_for(listening)
    assert ready == [[f"http://127.0.0.1:{port}" for port in ports]]
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(server, 10)
    assert order == ["stopped", "cleanup last", "cleanup first"]

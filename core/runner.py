"""Running an application for real: the one server runner of every service, the gateway and the
dashboard.

``run`` serves an app on uvloop until SIGINT or SIGTERM; ``serve`` is the coroutine under it (for
a caller that owns its loop), and ``serve_all`` serves several apps in one process (the embedded
mode). Connections keep the header-read, body-read and keep-alive timeouts
of ``core.server`` (from the app's settings); with an SSL context (``server_ssl_context``) the
server speaks HTTPS. On a signal the server stops accepting, drains the requests in flight for up
to ``shutdown_timeout`` seconds and closes every resource of the app.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from core.logging import flush_logging
from core.server import ServerTimeouts, app_runner

__all__ = ["Site", "run", "serve", "serve_all", "server_ssl_context"]

log = logging.getLogger("core.runner")

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def server_ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server context for ``certfile``/``keyfile``: TLS 1.2 or later, the library's defaults."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


@dataclass(frozen=True, slots=True)
class Site:
    """One app to serve, where, and how (over TLS with ``ssl_context``)."""

    app: web.Application
    host: str
    port: int
    ssl_context: ssl.SSLContext | None = None
    timeouts: ServerTimeouts | None = None

    @property
    def url(self) -> str:
        """Where it answers."""
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"


async def serve_all(
    sites: Sequence[Site],
    *,
    ready: Callable[[Sequence[Site]], None] | None = None,
    shutdown_timeout: float = 10.0,
    signals: Sequence[signal.Signals] = _STOP_SIGNALS,
    stopped: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Serve every site in this process until one of ``signals``, then shut down in order: stop
    accepting everywhere, await ``stopped()`` (what must happen between, e.g. draining an
    in-process bus), then drain each app's requests for up to ``shutdown_timeout`` seconds and
    close its resources, the last site first."""
    runners: list[web.AppRunner] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = sys.platform != "win32"
    if handled:
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
    try:
        for site in sites:
            runner = app_runner(
                site.app,
                timeouts=site.timeouts,
                access_log=None,
                shutdown_timeout=shutdown_timeout,
            )
            await runner.setup()
            runners.append(runner)
            tcp = web.TCPSite(
                runner, site.host, site.port, ssl_context=site.ssl_context, reuse_address=True
            )
            await tcp.start()
            log.info("serving on %s", site.url)
        if ready is not None:
            ready(sites)
        await stop.wait()
        log.info("shutting down")
    finally:
        if handled:
            # The loop may outlive the server (tests, embedding): a later signal must not be
            # swallowed by a handler setting an event nobody waits on.
            for sig in signals:
                loop.remove_signal_handler(sig)
        for runner in runners:
            for tcp_site in list(runner.sites):
                await tcp_site.stop()
        try:
            if stopped is not None:
                await stopped()
        finally:
            for runner in reversed(runners):
                await runner.cleanup()


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    ready: Callable[[str], None] | None = None,
    shutdown_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    timeouts: ServerTimeouts | None = None,
) -> None:
    """Serve ``app`` (over TLS with ``ssl_context``) until SIGINT or SIGTERM, then drain and
    close every resource. ``ready(url)`` is called once the socket listens; ``timeouts``: the
    clients' (default: from the app's settings)."""
    site = Site(app, host, port, ssl_context, timeouts)
    await serve_all(
        [site],
        ready=None if ready is None else (lambda sites: ready(sites[0].url)),
        shutdown_timeout=shutdown_timeout,
    )


def run(
    app: web.Application,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout: float = 10.0,
) -> None:
    """Serve ``app`` (over TLS with ``ssl_context``) on uvloop, where available, until SIGINT or
    SIGTERM; every log line queued is written before it returns."""
    server = serve(
        app, host=host, port=port, ssl_context=ssl_context, shutdown_timeout=shutdown_timeout
    )
    try:
        if sys.platform != "win32":
            import uvloop

            uvloop.run(server)
        else:  # pragma: no cover
            asyncio.run(server)
    finally:
        flush_logging()  # the lines of the last requests, written before the process exits

"""Running an application for real: the one server runner of every service, the gateway and the
dashboard.

``run`` serves an app on uvloop until SIGINT or SIGTERM; ``serve`` is the coroutine under it (for
a caller that owns its loop), and ``serve_all`` serves several apps in one process (the embedded
mode). Connections keep the header-read, body-read and keep-alive timeouts
of ``core.server`` (from the app's settings); with an SSL context (``server_ssl_context``) the
server speaks HTTPS.

On a stop signal an instance drains, in this order:

1. readiness fails (``HealthChecks.start_draining``: ``/readyz`` answers 503 ``draining``);
2. for ``drain_delay`` seconds (``SHUTDOWN_DRAIN_DELAY``) it goes on serving, so that balancers
   polling ``/readyz`` take it out of rotation first. That is for SIGTERM, what orchestrators
   (and ``aioshop restart``) send: SIGINT (Ctrl-C) skips the wait, and a second signal cuts it
   short;
3. it stops accepting connections (idle keep-alive ones are closed);
4. requests in flight finish, for at most ``shutdown_timeout`` seconds (``SHUTDOWN_TIMEOUT``);
5. the app's resources close, last first: ``core.bus.app.bus_workers_ctx`` stops the consumers
   (handlers in progress finish), flushes the outbox rows committed so far, then the bus, pools
   and clients close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import sys
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from core.certificate import certificate_not_after, watch_certificate
from core.health import HEALTH
from core.keys import SERVICE_NAME, SETTINGS
from core.logging import flush_logging
from core.metrics import METRICS
from core.server import ServerTimeouts, app_runner

__all__ = ["Site", "run", "serve", "serve_all", "server_ssl_context"]

log = logging.getLogger("core.runner")

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# The certificate file each server context loaded: its expiry goes into the app's /metrics.
_CERTFILES: weakref.WeakKeyDictionary[ssl.SSLContext, str] = weakref.WeakKeyDictionary()


def server_ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server context for ``certfile``/``keyfile``: TLS 1.2 or later, the library's defaults."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    _CERTFILES[context] = certfile
    return context


async def _report_certificate(site: Site) -> None:
    certfile = _CERTFILES.get(site.ssl_context) if site.ssl_context is not None else None
    if certfile is None or METRICS not in site.app:
        return
    try:
        not_after = await asyncio.to_thread(certificate_not_after, certfile)
    except (OSError, ValueError) as exc:
        log.warning("cannot read the expiry of %s: %r", certfile, exc)
        return
    role = site.app.get(SERVICE_NAME, "app")
    watch_certificate(site.app[METRICS].registry, role, not_after)


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
    drain_delay: float = 0.0,
    signals: Sequence[signal.Signals] = _STOP_SIGNALS,
    stopped: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Serve every site in this process until one of ``signals``, then drain (see the module
    docstring): readiness fails, serving goes on for ``drain_delay`` seconds (not after
    SIGINT; a second signal ends that wait), every site stops accepting, ``stopped()`` is
    awaited (what must happen between, e.g. draining an in-process bus), then each app's
    requests in flight get up to ``shutdown_timeout`` seconds and its resources close, the last
    site first."""
    runners: list[web.AppRunner] = []
    stop = asyncio.Event()
    hurry = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = sys.platform != "win32"

    def on_signal(sig: signal.Signals) -> None:
        # Ctrl-C is someone at a terminal, not a balancer's orchestrator: no drain delay.
        if stop.is_set() or sig == signal.SIGINT:
            hurry.set()
        stop.set()

    if handled:
        for sig in signals:
            loop.add_signal_handler(sig, on_signal, sig)
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
            await _report_certificate(site)
            tcp = web.TCPSite(
                runner, site.host, site.port, ssl_context=site.ssl_context, reuse_address=True
            )
            await tcp.start()
            log.info("serving on %s", site.url)
        if ready is not None:
            ready(sites)
        await stop.wait()
        await _fail_readiness(sites, drain_delay, hurry)
    finally:
        if handled:
            # The loop may outlive the server (tests, embedding): a later signal must not be
            # swallowed by a handler setting an event nobody waits on.
            for sig in signals:
                loop.remove_signal_handler(sig)
        for runner in runners:
            for tcp_site in list(runner.sites):
                await tcp_site.stop()
        if runners:
            log.info(
                "stopped accepting; finishing the requests in flight (at most %g s)",
                shutdown_timeout,
            )
        try:
            if stopped is not None:
                await stopped()
        finally:
            for runner in reversed(runners):
                await runner.cleanup()
        if runners:
            log.info("stopped")


async def _fail_readiness(sites: Sequence[Site], delay: float, hurry: asyncio.Event) -> None:
    """Steps 1 and 2 of a drain: readiness fails, and serving goes on for ``delay`` seconds
    (or until ``hurry`` is set, by a second stop signal)."""
    for site in sites:
        checks = site.app.get(HEALTH)
        if checks is not None:
            checks.start_draining()
    if delay > 0:
        log.info("shutting down: out of rotation, still serving for %g s", delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hurry.wait(), delay)
    else:
        log.info("shutting down")


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    ready: Callable[[str], None] | None = None,
    shutdown_timeout: float = 10.0,
    drain_delay: float = 0.0,
    ssl_context: ssl.SSLContext | None = None,
    timeouts: ServerTimeouts | None = None,
) -> None:
    """Serve ``app`` (over TLS with ``ssl_context``) until SIGINT or SIGTERM, then drain (see
    the module docstring) and close every resource. ``ready(url)`` is called once the socket
    listens; ``timeouts``: the clients' (default: from the app's settings)."""
    site = Site(app, host, port, ssl_context, timeouts)
    await serve_all(
        [site],
        ready=None if ready is None else (lambda sites: ready(sites[0].url)),
        shutdown_timeout=shutdown_timeout,
        drain_delay=drain_delay,
    )


def run(
    app: web.Application,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout: float | None = None,
    drain_delay: float | None = None,
) -> None:
    """Serve ``app`` (over TLS with ``ssl_context``) on uvloop, where available, until SIGINT or
    SIGTERM, then drain; every log line queued is written before it returns.

    ``shutdown_timeout`` and ``drain_delay`` default to the app's settings
    (``SHUTDOWN_TIMEOUT``, ``SHUTDOWN_DRAIN_DELAY``), else 10 s and none."""
    settings = app.get(SETTINGS)
    if shutdown_timeout is None:
        shutdown_timeout = settings.shutdown_timeout if settings is not None else 10.0
    if drain_delay is None:
        drain_delay = settings.shutdown_drain_delay if settings is not None else 0.0
    server = serve(
        app,
        host=host,
        port=port,
        ssl_context=ssl_context,
        shutdown_timeout=shutdown_timeout,
        drain_delay=drain_delay,
    )
    try:
        if sys.platform != "win32":
            import uvloop

            uvloop.run(server)
        else:  # pragma: no cover
            asyncio.run(server)
    finally:
        flush_logging()  # the lines of the last requests, written before the process exits

"""The ``Snapshotter``: gathers an app's figures and publishes a ``MetricsSnapshot`` per interval
(see the package's docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core.bus.app import BUS, OUTBOX_RELAY
from core.bus.events import Envelope, Event
from core.cache.app import CACHE
from core.keys import SETTINGS
from core.metrics import Metrics
from core.snapshot.events import (
    BusFigures,
    CacheTierFigures,
    ErrorFigures,
    MetricsSnapshot,
    ProcessFigures,
    RequestFigures,
)

if TYPE_CHECKING:
    from core.bus.bus import Bus

__all__ = [
    "DEFAULT_INTERVAL",
    "SNAPSHOT",
    "FiguresProvider",
    "Snapshotter",
    "add_figures",
    "snapshot_interval",
]

log = logging.getLogger("core.snapshot")

DEFAULT_INTERVAL = 1.0

FiguresProvider = Callable[[web.Application], Awaitable[Mapping[str, Any]]]


@dataclass
class _Provider:
    provider: FiguresProvider
    every: float
    value: Mapping[str, Any] | None = None
    fetched_at: float = float("-inf")


class _CpuClock:
    """CPU percent of this process between two readings (user + system time over wall time)."""

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.monotonic()

    def percent(self) -> float:
        cpu, wall = time.process_time(), time.monotonic()
        elapsed = wall - self._wall
        value = (cpu - self._cpu) / elapsed * 100 if elapsed > 0 else 0.0
        self._cpu, self._wall = cpu, wall
        return max(0.0, round(value, 2))


def _rss_bytes() -> int:
    """Current resident memory (``/proc/self/statm``), else the peak (``getrusage``).

    Reads a file: call it off the event loop.
    """
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if os.uname().sysname == "Darwin" else peak * 1024)


def snapshot_interval(app: web.Application, default: float = DEFAULT_INTERVAL) -> float:
    """The interval for ``app``: its settings' ``metrics_snapshot_interval``
    (``METRICS_SNAPSHOT_INTERVAL``); for settings without that field, the environment variable,
    else 1 s."""
    value = getattr(app.get(SETTINGS), "metrics_snapshot_interval", None)
    if value is None:
        raw = os.environ.get("METRICS_SNAPSHOT_INTERVAL")
        try:
            value = float(raw) if raw else default
        except ValueError:
            log.warning("METRICS_SNAPSHOT_INTERVAL=%r is not a number: using %s", raw, default)
            value = default
    return max(0.0, float(value))


class Snapshotter:
    """Builds ``MetricsSnapshot``s of one app and, once started, publishes one per interval."""

    def __init__(self, app: web.Application, service: str, metrics: Metrics) -> None:
        self.app = app
        self.service = service
        self.metrics = metrics
        self.host = socket.gethostname()
        self.instance = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.started_at = datetime.now(UTC)
        self.sent = 0
        self.dropped = 0
        self._providers: list[_Provider] = []
        self._cpu = _CpuClock()
        self._task: asyncio.Task[None] | None = None

    def add_figures(self, provider: FiguresProvider, *, every: float = 0.0) -> None:
        """Add a provider of business figures (see the module docstring)."""
        self._providers.append(_Provider(provider, every))

    async def take(self, *, figures_timeout: float = 0.5) -> MetricsSnapshot:
        """The snapshot of the interval since the previous ``take``; starts a new interval."""
        window = self.metrics.window.take()
        rss = await asyncio.to_thread(_rss_bytes)
        seconds = window.seconds
        errors = window.server_errors + window.client_errors
        return MetricsSnapshot(
            service=self.service,
            instance=self.instance,
            host=self.host,
            started_at=self.started_at,
            at=datetime.now(UTC),
            interval=round(seconds, 3),
            requests=RequestFigures(
                count=window.count,
                rate=round(window.count / seconds, 3),
                in_flight=int(self.metrics.in_flight._value.get()),
                p50_ms=_ms(window.p50),
                p95_ms=_ms(window.p95),
                p99_ms=_ms(window.p99),
            ),
            errors=ErrorFigures(
                server=window.server_errors,
                client=window.client_errors,
                server_rate=round(window.server_errors / seconds, 3),
                client_rate=round(window.client_errors / seconds, 3),
                ratio=round(errors / window.count, 4) if window.count else 0.0,
            ),
            process=ProcessFigures(pid=os.getpid(), cpu_percent=self._cpu.percent(), rss_bytes=rss),
            cache=self._cache_figures(),
            bus=self._bus_figures(),
            business=await self._business(figures_timeout),
        )

    def _cache_figures(self) -> dict[str, CacheTierFigures]:
        cache = self.app.get(CACHE)
        if cache is None:
            return {}
        hits: dict[str, int] = {}
        misses: dict[str, int] = {}
        for stats in cache.stats.functions.values():
            for tier, count in stats.hits.items():
                hits[tier] = hits.get(tier, 0) + count
            for tier, count in stats.misses.items():
                misses[tier] = misses.get(tier, 0) + count
        figures = {}
        for tier in sorted(hits.keys() | misses.keys()):
            hit, miss = hits.get(tier, 0), misses.get(tier, 0)
            ratio = round(hit / (hit + miss), 4) if hit + miss else None
            figures[tier] = CacheTierFigures(hits=hit, misses=miss, ratio=ratio)
        return figures

    def _bus_figures(self) -> BusFigures | None:
        bus = self.app.get(BUS)
        if bus is None:
            return None
        totals = bus.metrics.totals
        pending = lag = None
        if OUTBOX_RELAY in self.app:
            pending = int(bus.metrics.outbox_pending._value.get())
            lag = round(float(bus.metrics.outbox_lag._value.get()), 3)
        return BusFigures(
            connected=bus.transport.connected,
            published=totals["published"],
            consumed=totals["consumed"],
            retried=totals["retried"],
            parked=totals["parked"],
            outbox_pending=pending,
            outbox_lag_seconds=lag,
        )

    async def _business(self, limit: float) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        now = time.monotonic()
        for entry in self._providers:
            if entry.value is None or now - entry.fetched_at >= entry.every:
                try:
                    async with asyncio.timeout(limit):
                        entry.value = dict(await entry.provider(self.app))
                    entry.fetched_at = now
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a broken provider must not stop the snapshots
                    log.warning("business figures provider %r failed: %r", entry.provider, exc)
                    continue
            merged.update(entry.value or {})
        return merged

    async def publish_once(self, bus: Bus, *, within: float) -> bool:
        """Take a snapshot and send it; False (and dropped) when the bus cannot take it now."""
        snapshot = await self.take(figures_timeout=within / 2)
        if not bus.transport.connected:
            self.dropped += 1
            return False
        envelope = Envelope.wrap(snapshot, source=self.service)
        try:
            async with asyncio.timeout(within):
                await bus.transport.publish(
                    envelope.type,
                    envelope.to_bytes(),
                    message_id=str(envelope.id),
                    headers={"x-source": envelope.source},
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the bus's errors, a timeout: this snapshot is lost, by design
            self.dropped += 1
            log.debug("metrics snapshot dropped: %r", exc)
            return False
        self.sent += 1
        return True

    def publishes(self) -> tuple[type[Event], ...]:
        """What it publishes: ``metrics.snapshot``."""
        return (MetricsSnapshot,)

    def start(self, bus: Bus, *, interval: float | None = None) -> None:
        """Publish a snapshot every ``interval`` seconds (default: ``snapshot_interval`` of the
        app) until ``stop``."""
        if interval is None:
            interval = snapshot_interval(self.app)
        if interval <= 0 or self._task is not None:
            return
        self.metrics.window.take()  # the first interval starts now
        self._cpu.percent()
        self._task = asyncio.create_task(self._run(bus, interval), name="metrics-snapshot")

    async def stop(self) -> None:
        """Stop publishing."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, bus: Bus, interval: float) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))  # the snapshot period
            next_at = max(next_at + interval, loop.time())
            try:
                await self.publish_once(bus, within=interval)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("metrics snapshot failed")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def add_figures(app: web.Application, provider: FiguresProvider, *, every: float = 0.0) -> None:
    """Contribute business figures to ``app``'s snapshots (see the module docstring)."""
    app[SNAPSHOT].add_figures(provider, every=every)


SNAPSHOT = web.AppKey("snapshot", Snapshotter)

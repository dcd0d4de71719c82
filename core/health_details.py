"""The figures of ``/readyz`` details that core knows how to measure, and the task refreshing
them.

``details_ctx`` (added by ``create_app``, after the app's resources) registers the standard
probes and runs every registered probe every ``HEALTH_DETAILS_INTERVAL`` seconds in the
background:

- ``outbox_lag`` (seconds): the age of the oldest unpublished outbox row, as the outbox relay
  last measured it (``bus_outbox_lag_seconds``), against ``HEALTH_OUTBOX_LAG_WARN``; only on an
  instance that relays an outbox;
- ``parked`` (messages): what the parking queues of the instance's consumed queues hold, by
  queue, against ``HEALTH_PARKED_WARN``; only where the transport can tell (a passive queue
  declare on RabbitMQ, the in-memory transport's list);
- ``cache_tiers`` (tiers down): the remote cache tiers whose circuit breaker is not closed, by
  tier, against ``HEALTH_CACHE_TIERS_DOWN_WARN``; only with a cache.

A service adds its own (the orders service measures its saga backlog) with
``app[HEALTH].add_detail``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping

from aiohttp import web

from core.bus.app import BUS, OUTBOX_RELAY
from core.cache import CACHE
from core.health import HEALTH, Detail, Probe
from core.settings import BaseServiceSettings

__all__ = ["cache_tiers_probe", "details_ctx", "outbox_lag_probe", "parked_probe"]

log = logging.getLogger("core.health")

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def outbox_lag_probe(app: web.Application, threshold: float) -> Probe:
    """The ``outbox_lag`` figure: read from the relay's gauge, no query of its own."""

    async def probe() -> Mapping[str, Detail]:
        bus = app.get(BUS)
        if bus is None or OUTBOX_RELAY not in app:
            return {}
        (family,) = bus.metrics.outbox_lag.collect()
        lag = round(float(family.samples[0].value), 3)
        return {"outbox_lag": Detail.against(lag, threshold, {"unit": "seconds"})}

    return probe


def parked_probe(app: web.Application, threshold: int) -> Probe:
    """The ``parked`` figure: the messages in the parking queue of each consumed queue."""

    async def probe() -> Mapping[str, Detail]:
        bus = app.get(BUS)
        if bus is None:
            return {}
        queues = sorted({subscription.queue for subscription in bus.subscriptions})
        counts: dict[str, int] = {}
        for queue in queues:
            count = await bus.transport.parked_count(queue)
            if count is None:
                return {}
            counts[queue] = count
        if not counts:
            return {}
        return {
            "parked": Detail.against(
                sum(counts.values()), threshold, {"unit": "messages", "queues": counts}
            )
        }

    return probe


def cache_tiers_probe(app: web.Application, threshold: int) -> Probe:
    """The ``cache_tiers`` figure: remote tiers whose breaker keeps calls away."""

    async def probe() -> Mapping[str, Detail]:
        cache = app.get(CACHE)
        if cache is None:
            return {}
        tiers: dict[str, str] = {}
        for family in cache.collector.collect():
            if family.name == "cache_tier_up":
                for sample in family.samples:
                    tiers[sample.labels["tier"]] = "up" if sample.value >= 1 else "down"
        if not tiers:
            return {}
        down = sum(1 for state in tiers.values() if state == "down")
        return {"cache_tiers": Detail.against(down, threshold, {"unit": "tiers", "tiers": tiers})}

    return probe


def details_ctx(settings: BaseServiceSettings) -> CleanupCtx:
    """A ``cleanup_ctx`` registering the standard probes and refreshing every probe's figures
    every ``settings.health_details_interval`` seconds (each probe within the readiness
    timeout) until the app stops."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        checks = app[HEALTH]
        standard = {
            "outbox_lag": outbox_lag_probe(app, settings.health_outbox_lag_warn),
            "parked": parked_probe(app, settings.health_parked_warn),
            "cache_tiers": cache_tiers_probe(app, settings.health_cache_tiers_down_warn),
        }
        for name, probe in standard.items():
            checks.add_detail(name, probe)

        async def refresh() -> None:
            while True:
                try:
                    await checks.refresh_details(settings.readiness_timeout)
                except Exception as exc:
                    log.warning("refreshing readiness details failed: %r", exc)
                await asyncio.sleep(settings.health_details_interval)

        task = asyncio.create_task(refresh(), name="readiness-details")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for name in standard:
                checks.remove_detail(name)

    return ctx

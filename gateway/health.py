"""Active health checks: every instance's ``/readyz`` polled on an interval, concurrently."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import aiohttp

from gateway.balancer import Instance, Pool

__all__ = ["HealthChecker"]

log = logging.getLogger("gateway.health")


class HealthChecker:
    """Polls each instance of ``pools``; a 200 within ``timeout`` is a pass, anything else fails.

    ``start`` runs one round before returning, so the gateway knows which instances are down
    before it takes traffic; ``stop`` cancels the loop.
    """

    def __init__(
        self,
        pools: Iterable[Pool],
        session: aiohttp.ClientSession,
        *,
        path: str,
        interval: float,
        timeout: float,
    ) -> None:
        self.pools = list(pools)
        self.session = session
        self.path = path
        self.interval = interval
        self.timeout = timeout
        self._task: asyncio.Task[None] | None = None
        # Instances seen healthy at least once: before that, one being down is one starting.
        self._seen_up: set[str] = set()

    async def start(self) -> None:
        """Check every instance once, then keep checking in the background."""
        await self.check_all()
        self._task = asyncio.create_task(self._run(), name="gateway-health-checks")

    async def stop(self) -> None:
        """Stop checking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check_all(self) -> None:
        """One round over every instance of every pool."""
        instances = [instance for pool in self.pools for instance in pool.instances]
        results = await asyncio.gather(*(self._check(instance) for instance in instances))
        for instance, (ok, answered) in zip(instances, results, strict=True):
            was = instance.healthy
            instance.health_result(ok, answered=answered)
            self._log_change(instance, was)

    def _log_change(self, instance: Instance, was: bool) -> None:
        """A warning when an instance seen up before goes down (or comes back); while the
        system starts, an instance not up yet is no news (DEBUG), and its first up is INFO."""
        now = instance.healthy
        if instance.id not in self._seen_up:
            if now:
                self._seen_up.add(instance.id)
                if not was:
                    log.info("instance %s is up", instance.id)
            elif was:
                log.debug("instance %s is not up yet", instance.id)
        elif now != was:
            log.warning("instance %s is %s", instance.id, "up" if now else "down")

    async def _check(self, instance: Instance) -> tuple[bool, bool]:
        """Whether the instance is ready, and whether it answered at all."""
        try:
            async with asyncio.timeout(self.timeout):
                async with self.session.get(instance.url + self.path) as response:
                    await response.read()
                    return response.status == 200, True
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False, False

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check_all()
            except asyncio.CancelledError:
                raise
            except Exception:  # a broken round must not end the checks for good
                log.exception("health check round failed")

"""Liveness and readiness: each dependency checked concurrently with a short timeout.

An instance that is shutting down says so first: ``HealthChecks.start_draining`` (called by
``core.runner`` when a stop signal arrives) makes every later ``/readyz`` a 503 with a
``draining`` check, while the instance still serves, so that balancers polling it take it out of
rotation before it stops accepting connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

__all__ = [
    "DRAINING",
    "HEALTH",
    "Check",
    "HealthChecks",
    "NotReady",
]

log = logging.getLogger("core.health")

Check = Callable[[], Awaitable[object]]

DRAINING = "draining"  # the name of the check a draining instance reports down


class NotReady(Exception):
    """Raised by a check that is not ready yet for an expected reason (a cache warming up):
    reported as down with the message as its error, without the warning of a failure."""


class HealthChecks:
    """Named readiness checks; resources register theirs as they start."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}
        self._draining = False

    @property
    def draining(self) -> bool:
        """Whether the instance is shutting down (readiness fails from then on)."""
        return self._draining

    def start_draining(self) -> None:
        """Fail readiness from now on: the instance is about to stop. Not undone."""
        if not self._draining:
            log.info("draining: readiness fails from now on")
        self._draining = True

    def add(self, name: str, check: Check) -> None:
        """Register ``check`` under ``name``: it passes when it returns without raising."""
        self._checks[name] = check

    def remove(self, name: str) -> None:
        """Forget the check called ``name``."""
        self._checks.pop(name, None)

    @property
    def names(self) -> list[str]:
        """Names of the registered checks."""
        return sorted(self._checks)

    async def run(self, deadline: float) -> tuple[bool, dict[str, dict[str, str]]]:
        """Run every check (each within ``deadline`` seconds); return success and a report.

        While draining, no check runs: the report is ``draining`` down, whatever else holds."""
        if self._draining:
            return False, {DRAINING: {"status": "down", "error": "shutting down"}}
        names = list(self._checks)
        results = await asyncio.gather(
            *(self._one(name, self._checks[name], deadline) for name in names)
        )
        report = dict(zip(names, results, strict=True))
        return all(r["status"] == "up" for r in report.values()), report

    @staticmethod
    async def _one(name: str, check: Check, deadline: float) -> dict[str, str]:
        try:
            async with asyncio.timeout(deadline):
                await check()
        except TimeoutError:
            return {"status": "down", "error": "timeout"}
        except NotReady as exc:
            return {"status": "down", "error": str(exc) or "not ready"}
        except Exception as exc:  # a failing check is a report, never a crash
            log.warning("readiness check %s failed: %r", name, exc)
            return {"status": "down", "error": "unreachable"}
        return {"status": "up"}


HEALTH = web.AppKey("health", HealthChecks)

"""Liveness and readiness: each dependency checked concurrently with a short timeout."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

__all__ = [
    "HEALTH",
    "Check",
    "HealthChecks",
    "NotReady",
]

log = logging.getLogger("core.health")

Check = Callable[[], Awaitable[object]]


class NotReady(Exception):
    """Raised by a check that is not ready yet for an expected reason (a cache warming up):
    reported as down with the message as its error, without the warning of a failure."""


class HealthChecks:
    """Named readiness checks; resources register theirs as they start."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

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
        """Run every check (each within ``deadline`` seconds); return success and a report."""
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

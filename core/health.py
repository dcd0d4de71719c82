"""Liveness and readiness: each dependency checked concurrently with a short timeout.

An instance that is shutting down says so first: ``HealthChecks.start_draining`` (called by
``core.runner`` when a stop signal arrives) makes every later ``/readyz`` a 503 with a
``draining`` check, while the instance still serves, so that balancers polling it take it out of
rotation before it stops accepting connections.

Beside the checks that decide readiness, ``/readyz`` reports *details*: figures such as the
outbox lag or the saga backlog, each with its warning threshold and a status (``ok``, ``warn``,
or ``unknown`` when it could not be read). They come from probes (``HealthChecks.add_detail``)
that a background task (``core.health_details``) runs every ``HEALTH_DETAILS_INTERVAL``
seconds, never from the request: a storm of ``/readyz`` costs no query. A ``warn`` leaves
readiness alone unless ``HEALTH_WARN_FAILS_READINESS`` is set: a lagging outbox is a reason to
look, and taking every instance out of rotation for it would turn a backlog into an outage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

__all__ = [
    "DRAINING",
    "HEALTH",
    "Check",
    "Detail",
    "HealthChecks",
    "NotReady",
    "Probe",
]

log = logging.getLogger("core.health")

Check = Callable[[], Awaitable[object]]

DRAINING = "draining"  # the name of the check a draining instance reports down


@dataclass(frozen=True, slots=True)
class Detail:
    """One figure of ``/readyz`` details: its value, the threshold it warns beyond, a status,
    and anything else worth showing beside it (``extra``: e.g. the value per queue)."""

    value: float
    threshold: float
    status: Literal["ok", "warn"]
    extra: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def against(
        cls, value: float, threshold: float, extra: Mapping[str, object] | None = None
    ) -> Detail:
        """``warn`` when ``value`` exceeds ``threshold``, else ``ok``."""
        return cls(value, threshold, "warn" if value > threshold else "ok", extra or {})

    def as_json(self) -> dict[str, object]:
        """The figure as ``/readyz`` shows it."""
        return {
            "value": self.value,
            "threshold": self.threshold,
            "status": self.status,
            **self.extra,
        }


# A probe measures and returns named figures; none when it has nothing to report (e.g. the
# instance has no outbox relay).
Probe = Callable[[], Awaitable[Mapping[str, Detail]]]


class NotReady(Exception):
    """Raised by a check that is not ready yet for an expected reason (a cache warming up):
    reported as down with the message as its error, without the warning of a failure."""


class HealthChecks:
    """Named readiness checks; resources register theirs as they start."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}
        self._probes: dict[str, Probe] = {}
        self._details: dict[str, dict[str, object]] = {}
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

    def add_detail(self, name: str, probe: Probe) -> None:
        """Register ``probe`` under ``name``: its figures appear in ``/readyz`` details."""
        self._probes[name] = probe

    def remove_detail(self, name: str) -> None:
        """Forget the probe called ``name``."""
        self._probes.pop(name, None)

    @property
    def details(self) -> dict[str, dict[str, object]]:
        """The figures of the last ``refresh_details``, by name (empty before the first)."""
        return self._details

    async def refresh_details(self, deadline: float) -> dict[str, dict[str, object]]:
        """Run every probe (each within ``deadline`` seconds) and keep their figures: a probe
        that fails or times out reports ``unknown`` under its own name."""
        names = list(self._probes)
        results = await asyncio.gather(
            *(self._measure(name, self._probes[name], deadline) for name in names)
        )
        details: dict[str, dict[str, object]] = {}
        for figures in results:
            details.update(figures)
        self._details = details
        return details

    @staticmethod
    async def _measure(name: str, probe: Probe, deadline: float) -> dict[str, dict[str, object]]:
        try:
            async with asyncio.timeout(deadline):
                figures = await probe()
        except TimeoutError:
            return {name: {"status": "unknown", "error": "timeout"}}
        except Exception as exc:  # a failing probe is a report, never a crash
            log.warning("readiness detail %s failed: %r", name, exc)
            return {name: {"status": "unknown", "error": "unavailable"}}
        return {key: detail.as_json() for key, detail in figures.items()}

    async def readiness(
        self, deadline: float, *, warn_fails: bool = False
    ) -> tuple[bool, dict[str, object]]:
        """Run the checks; return readiness and the body of ``/readyz``: ``status``,
        ``checks`` and, when any probe reported, ``details`` (the last figures). A ``warn``
        detail fails readiness only with ``warn_fails``."""
        ok, checks = await self.run(deadline)
        body: dict[str, object] = {"checks": checks}
        if self._details and not self._draining:
            body["details"] = self._details
            if warn_fails and any(d.get("status") == "warn" for d in self._details.values()):
                ok = False
        return ok, {"status": "ok" if ok else "unavailable", **body}

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

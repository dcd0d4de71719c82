"""Warming a cache before a service takes traffic: loads run a few at a time, counted as they end.

A *load* is an awaitable that reads through the cache (a call of a ``@cached`` function, or a
service method that makes some), so that its result is in every tier when traffic arrives. The
loads may come from an async iterable: a warm-up that needs the answer of one query (which
products are hot) to name the next loads awaits it between two of them, while the first loads
already run.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterable, Awaitable, Iterable
from dataclasses import dataclass
from typing import cast

__all__ = ["Loads", "WarmProgress", "run_loads"]

log = logging.getLogger("core.cache")

Loads = Iterable[Awaitable[object]] | AsyncIterable[Awaitable[object]]


@dataclass
class WarmProgress:
    """How many loads of a warm-up have ended, either way (read it even after a timeout)."""

    warmed: int = 0
    failed: int = 0


async def run_loads(
    loads: Loads, *, concurrency: int = 8, progress: WarmProgress | None = None
) -> int:
    """Await ``loads``, ``concurrency`` at a time; return how many failed.

    A failing load is logged (the first with its traceback, the others briefly: a database that
    is down would otherwise fill the log), never raised. ``progress`` is updated as loads end.
    A cancellation (a timeout around the warm-up) cancels the loads in flight; when the source of
    loads raises, the loads started are awaited, then the error propagates.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be positive")
    progress = progress if progress is not None else WarmProgress()
    failed_before = progress.failed
    gate = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()

    async def one(load: Awaitable[object]) -> None:
        try:
            await load
        except Exception as exc:
            if progress.failed == failed_before:
                log.warning("cache warm-up load failed", exc_info=True)
            else:
                log.debug("cache warm-up load failed: %r", exc)
            progress.failed += 1
        else:
            progress.warmed += 1
        finally:
            gate.release()

    async def start(load: Awaitable[object]) -> None:
        try:
            await gate.acquire()
        except BaseException:
            if inspect.iscoroutine(load):
                load.close()
            raise
        task = asyncio.ensure_future(one(load))
        running.add(task)
        task.add_done_callback(running.discard)

    pending = None if isinstance(loads, AsyncIterable) else iter(loads)
    try:
        if pending is not None:
            for load in pending:
                await start(load)
        else:
            async for load in cast(AsyncIterable[Awaitable[object]], loads):
                await start(load)
    except BaseException as exc:
        if not isinstance(exc, Exception):  # cancelled: the loads in flight are abandoned
            for task in running:
                task.cancel()
        raise
    finally:
        # the loads started end either way (the source of further loads may have failed)
        await asyncio.gather(*running, return_exceptions=True)
        if inspect.isasyncgen(loads):
            await loads.aclose()
        for load in pending or ():
            if inspect.iscoroutine(load):
                load.close()  # cancelled before its turn: it never ran
    return progress.failed - failed_before

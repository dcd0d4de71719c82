"""The archive's subscriber: every envelope on the bus into the archive, in batches.

A durable queue bound to ``#`` (every event type), shared by the instances that host the
archive as competing consumers. Each delivery waits for the batch it joined to be stored and
only then returns, so the message is acknowledged after the write (at least once; the archive's
store is idempotent by event id, so a redelivery changes nothing).

When the archive's database is unreachable (``ArchiveUnavailable``), the batch is retried in
place with a backoff until it is stored: the messages stay unacknowledged on the broker, up to
the queue's prefetch, and the rest wait in the durable queue; none is parked for an outage. Any
other failure (an envelope the database refuses) is one envelope's: the batch is stored one by
one (the database going away meanwhile is retried in place there too), and only the refused
messages go through the bus's retry ladder, then to parking. A delivery cancelled while its
batch is written (the bus's drain timeout at a stop) is left unacknowledged, redelivered later;
the writer goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from core.archive.base import ArchiveUnavailable, EventArchive
from core.bus.bus import Bus, Message
from core.bus.events import Envelope
from core.bus.matching import topic_matches, validate_pattern
from core.bus.transport import RetryPolicy
from core.retry import Backoff

__all__ = ["ArchiveSubscriber"]

log = logging.getLogger("core.archive")

_Pending = tuple[dict[str, Any], "asyncio.Future[None]"]


class ArchiveSubscriber:
    """Stores what ``subscribe`` receives into ``archive``; ``start`` before the bus consumes,
    ``stop`` after it stopped consuming."""

    def __init__(
        self,
        archive: EventArchive,
        *,
        exclude: Iterable[str] = ("metrics.snapshot",),
        batch_size: int = 200,
        batch_delay: float = 0.05,
        backoff: Backoff | None = None,
        on_stored: Callable[[int, int], object] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.archive = archive
        self.exclude = tuple(validate_pattern(p) for p in exclude)
        self.batch_size = batch_size
        self.batch_delay = batch_delay
        self.backoff = backoff or Backoff(base=0.5, cap=30.0)
        self.on_stored = on_stored
        self._pending: asyncio.Queue[_Pending] = asyncio.Queue()
        self._excluded: dict[str, bool] = {}
        self._worker: asyncio.Task[None] | None = None

    def subscribe(self, bus: Bus, *, queue: str, retry: RetryPolicy | None = None) -> None:
        """Bind the durable ``queue`` to every event type of ``bus`` (before it consumes)."""
        bus.subscribe("#", self.handle, queue=queue, prefetch=self.batch_size, retry=retry)

    def start(self) -> None:
        """Start writing batches."""
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="archive:writer")
            self._worker.add_done_callback(self._ended)

    def _ended(self, worker: asyncio.Task[None]) -> None:
        if worker.cancelled():
            return  # a stop
        exc = worker.exception()
        log.error("the archive writer ended unexpectedly", exc_info=exc)

    async def stop(self) -> None:
        """Stop writing; deliveries still waiting fail (the bus redelivers them)."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while not self._pending.empty():
            self._fail([self._pending.get_nowait()], ArchiveUnavailable("the archive is stopping"))

    def excluded(self, event_type: str) -> bool:
        """Whether envelopes of ``event_type`` are left out of the archive."""
        known = self._excluded.get(event_type)
        if known is None:
            known = any(topic_matches(pattern, event_type) for pattern in self.exclude)
            if len(self._excluded) < 1024:  # types come from the wire: bounded
                self._excluded[event_type] = known
        return known

    async def handle(self, message: Message) -> None:
        """One delivery: returns once its envelope is stored (then the bus acknowledges it)."""
        await self.add(message.envelope)

    async def add(self, envelope: Envelope) -> None:
        """Store ``envelope`` with the next batch; returns once stored."""
        if self.excluded(envelope.type):
            return
        if self._worker is None:
            raise ArchiveUnavailable("the archive subscriber is not started")
        if self._worker.done():  # it cannot end by itself; if it did, deliveries would hang
            log.error("the archive writer had ended: restarting it")
            self.start()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.put_nowait((envelope.model_dump(mode="json"), future))
        await future

    async def _run(self) -> None:
        while True:
            batch = [await self._pending.get()]
            try:
                await self._fill(batch)
                await self._write(batch)
            except asyncio.CancelledError:  # a stop: the batch's deliveries fail, redelivered
                self._fail(batch, ArchiveUnavailable("the archive is stopping"))
                raise
            except Exception as exc:  # a bug must not stop archiving for the process's life
                log.exception("archiving a batch failed")
                self._fail(batch, exc)  # the bus's retry ladder, then parking

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)

    async def _fill(self, batch: list[_Pending]) -> None:
        """Take what is waiting, and what arrives within ``batch_delay``, up to a batch."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_delay
        while len(batch) < self.batch_size:
            if not self._pending.empty():
                batch.append(self._pending.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                return
            try:
                async with asyncio.timeout(left):
                    batch.append(await self._pending.get())
            except TimeoutError:
                return

    async def _write(self, batch: list[_Pending]) -> None:
        while True:
            live = [(envelope, future) for envelope, future in batch if not future.done()]
            if not live:
                return  # every delivery was cancelled (a stop): the bus redelivers them
            try:
                new = await self.archive.store([envelope for envelope, _ in live])
            except ArchiveUnavailable as exc:
                delay = self.backoff.next_delay()
                log.warning(
                    "cannot archive %d envelopes (%s): retrying in %.1f s", len(live), exc, delay
                )
                await asyncio.sleep(delay)  # the backoff itself
                continue
            except Exception:
                log.warning("archiving a batch failed: storing it one by one", exc_info=True)
                await self._write_each(live)
                return
            self.backoff.reset()
            self._stored(live, new)
            return

    async def _write_each(self, batch: list[_Pending]) -> None:
        """Store each envelope alone: a refused one fails its delivery only; the database
        going away meanwhile is retried in place, as for a batch (an outage parks nothing)."""
        for pending in batch:
            envelope, future = pending
            while not future.done():
                try:
                    new = await self.archive.store([envelope])
                except ArchiveUnavailable as exc:
                    delay = self.backoff.next_delay()
                    log.warning("cannot archive an envelope (%s): retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)  # the backoff itself
                    continue
                except Exception as exc:
                    log.warning("the archive refused envelope %s: %r", envelope.get("id"), exc)
                    future.set_exception(exc)
                    break
                self.backoff.reset()
                self._stored([pending], new)

    def _stored(self, batch: list[_Pending], new: int) -> None:
        """Acknowledge ``batch`` (its deliveries cancelled meanwhile stay so: redelivered)."""
        for _, future in batch:
            if not future.done():
                future.set_result(None)
        if self.on_stored is not None:
            try:
                self.on_stored(len(batch), new)
            except Exception:
                log.exception("the archive's on_stored callback failed")

"""The outbox relay: sends committed outbox rows to the bus.

``OutboxRelay`` sends committed rows in order of creation, marks them sent, and leaves failed
ones for the next round. Several relays (one per instance) share the table through ``FOR UPDATE
SKIP LOCKED``. A relay that dies between the broker's confirm and the mark sends the row again:
consumers deduplicate by envelope id (``Inbox``). It is woken by the ``NOTIFY`` that
``Outbox.publish`` sends at commit and polls as a fallback; a failed round is retried with
``core.retry.Backoff``.

Its rounds run on its own connection, the one that LISTENs (the pool when it has none): no pool
checkout and reset per round. The lag and pending gauges are refreshed at most once a second,
and sent rows are purged every ten minutes, so that a busy relay does not query for them in
every round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg

from core.bus.bus import Bus
from core.bus.events import Envelope
from core.bus.outbox import NOTIFY_CHANNEL, Connection
from core.bus.transport import PublishError
from core.retry import Backoff

__all__ = ["OutboxRelay"]

log = logging.getLogger("core.bus.outbox")

OBSERVE_EVERY = 1.0  # seconds between two refreshes of the lag and pending gauges
PURGE_EVERY = 600.0  # seconds between two purges of sent rows


class OutboxRelay:
    """Sends committed outbox rows to the bus; woken by NOTIFY, polling as a fallback.

    A failed round is retried after a ``core.retry.Backoff`` wait between 0 and
    ``retry_base``, doubling up to ``retry_cap``.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: Bus,
        *,
        dsn: str,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        retention_hours: int = 24,
        retry_base: float = 0.1,
        retry_cap: float = 5.0,
    ) -> None:
        self.pool = pool
        self.bus = bus
        self.dsn = dsn
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retention_hours = retention_hours
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None

    async def start(self) -> None:
        """Start relaying in the background."""
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop relaying (rows not yet sent stay for the next start)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_listener()

    def wake(self) -> None:
        """Relay now rather than at the next poll."""
        self._wake.set()

    async def relay_once(self) -> int:
        """Send one batch of committed rows (on a connection of the pool); return how many were
        sent."""
        async with self.pool.acquire() as conn:
            return await self._relay_on(conn)

    async def _round(self) -> int:
        # Only the relay's own loop uses its listening connection: a connection runs one query
        # at a time, and relay_once may be called alongside.
        listener = self._listener
        if listener is not None and not listener.is_closed():
            return await self._relay_on(listener)
        return await self.relay_once()

    async def _relay_on(self, conn: Connection) -> int:
        async with conn.transaction():
            # As text: the listening connection has no JSON codec, and the envelope is parsed
            # and validated in one go from it.
            rows = await conn.fetch(
                """
                SELECT id, envelope::text AS envelope FROM outbox
                 WHERE published_at IS NULL
                 ORDER BY created_at, id
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED
                """,
                self.batch_size,
            )
            if not rows:
                return 0
            envelopes = [Envelope.from_bytes(row["envelope"]) for row in rows]
            results = await asyncio.gather(
                *(self.bus.publish_envelope(e) for e in envelopes), return_exceptions=True
            )
            sent = [e.id for e, r in zip(envelopes, results, strict=True) if r is None]
            failed = [(e.id, r) for e, r in zip(envelopes, results, strict=True) if r is not None]
            if sent:
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY($1::uuid[])", sent
                )
            for event_id, error in failed:
                if isinstance(error, asyncio.CancelledError):
                    raise error
                await conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                    event_id,
                    repr(error)[:500],
                )
        if failed:
            raise PublishError(f"{len(failed)} of {len(envelopes)} outbox events not confirmed")
        return len(sent)

    async def _observe_lag(self) -> None:
        row = await self.pool.fetchrow(
            """
            SELECT count(*) AS pending,
                   greatest(coalesce(extract(epoch FROM now() - min(created_at)), 0), 0) AS lag
              FROM outbox WHERE published_at IS NULL
            """
        )
        if row is not None:
            self.bus.metrics.outbox_pending.set(row["pending"])
            self.bus.metrics.outbox_lag.set(float(row["lag"]))

    async def _purge(self) -> None:
        await self.pool.execute(
            "DELETE FROM outbox WHERE published_at < now() - make_interval(hours => $1)",
            self.retention_hours,
        )

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            self._listener = await asyncpg.connect(self.dsn)
            await self._listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("outbox relay cannot LISTEN (polling instead): %r", exc)
            await self._close_listener()

    def _on_notify(self, *args: Any) -> None:
        self._wake.set()

    async def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None

    async def _run(self) -> None:
        backoff = Backoff(base=self.retry_base, cap=self.retry_cap)
        observed = purged = -float("inf")
        while True:
            await self._listen()
            self._wake.clear()
            try:
                sent = await self._round()
                now = time.monotonic()
                if now - purged >= PURGE_EVERY:
                    await self._purge()
                    purged = now
                if now - observed >= OBSERVE_EVERY:
                    await self._observe_lag()
                    observed = now
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "outbox relay round failed (%d in a row): %r", backoff.failures + 1, exc
                )
                with contextlib.suppress(Exception):
                    await self._observe_lag()
                await backoff.wait()
                continue
            if sent == self.batch_size:
                continue  # more may be waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

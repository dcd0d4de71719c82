"""The outbox relay: sends committed outbox rows to the bus.

``OutboxRelay`` sends committed rows in order of creation, marks them sent, and leaves failed
ones for the next round. Several relays (one per instance) share the table through ``FOR UPDATE
SKIP LOCKED``. A relay that dies between the broker's confirm and the mark sends the row again:
consumers deduplicate by envelope id (``Inbox``). It is woken by the ``NOTIFY`` that
``Outbox.publish`` sends at commit and polls as a fallback; a failed round is retried with
``core.retry.Backoff``.

Rounds are pipelined in ``lanes`` (two by default): lanes take turns to lock the next batch and
start publishing it, in creation order, then each waits for its own confirms and marks its rows,
while the next lane already locks (``SKIP LOCKED`` passes over the rows in flight) and sends the
following batch. A row is still marked only after its own confirm, in the transaction that
locked it. Each lane runs on a connection of its own, lane 0 on the one that LISTENs (the pool
when it cannot connect): no pool checkout per round, and no wait on a pool that the consumers
hold. The lag and pending gauges are refreshed at most
once a second, and sent rows are purged every ten minutes, so that a busy relay does not query
for them in every round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg
import orjson

from core.bus.bus import Bus
from core.bus.events import Envelope
from core.bus.outbox import NOTIFY_CHANNEL, Connection
from core.bus.transport import PublishError
from core.retry import Backoff
from core.tracing import TRACE_HEADERS

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
        lanes: int = 2,
    ) -> None:
        self.pool = pool
        self.bus = bus
        self.dsn = dsn
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retention_hours = retention_hours
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.lanes = lanes
        self._wake = asyncio.Event()
        self._wake.set()  # rows may be waiting at start
        self._turn = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._own: dict[int, asyncpg.Connection] = {}  # lane -> its connection (lanes >= 1)

    async def start(self) -> None:
        """Start relaying in the background."""
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop relaying (rows not yet sent stay for the next start)."""
        await self._cancel()
        await self._close_listener()
        for conn in self._own.values():
            with contextlib.suppress(Exception):
                await conn.close()
        self._own.clear()

    async def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def flush(self, within: float) -> int:
        """Stop the background rounds, then send the rows committed so far, batch after batch,
        for at most ``within`` seconds: what a graceful stop does once nothing writes any more.
        Returns how many were sent; what is left (unconfirmed, past the deadline, or locked by
        another instance's relay) stays for a relay that runs later."""
        await self._cancel()
        sent = 0
        try:
            async with asyncio.timeout(within):
                while batch := await self.relay_once():
                    sent += batch
        except TimeoutError:
            log.warning("outbox flush at stop: %d sent, more left after %g s", sent, within)
        except Exception as exc:  # the stop goes on: what is left is sent by a later relay
            log.warning("outbox flush at stop: %d sent, then it failed: %r", sent, exc)
        else:
            if sent:
                log.info("outbox flushed at stop: %d events sent", sent)
        return sent

    def wake(self) -> None:
        """Relay now rather than at the next poll."""
        self._wake.set()

    async def relay_once(self) -> int:
        """Send one batch of committed rows (on a connection of the pool); return how many were
        sent."""
        async with self.pool.acquire() as conn:
            return await self._relay_on(conn)

    async def _relay_on(self, conn: Connection) -> int:
        async with conn.transaction():
            envelopes, publishing = await self._select_and_send(conn)
            sent, failed = await self._settle(conn, envelopes, publishing)
        _raise_if(failed, len(envelopes))
        return sent

    async def _select_and_send(
        self, conn: Connection
    ) -> tuple[list[Envelope], asyncio.Future[list[BaseException | None]]]:
        """Lock the next batch (inside ``conn``'s transaction) and start publishing it, in
        order, each in the trace context stored with it; the future gathers the confirms
        (``None`` each when confirmed)."""
        # As text: the listening connection has no JSON codec, and the envelope is parsed
        # and validated in one go from it.
        rows = await conn.fetch(
            """
            SELECT id, envelope::text AS envelope, headers::text AS headers FROM outbox
             WHERE published_at IS NULL
             ORDER BY created_at, id
             LIMIT $1
             FOR UPDATE SKIP LOCKED
            """,
            self.batch_size,
        )
        envelopes = [Envelope.from_bytes(row["envelope"]) for row in rows]
        publishing = asyncio.gather(
            *(
                self.bus.publish_envelope(envelope, trace=_trace_of(row["headers"]))
                for envelope, row in zip(envelopes, rows, strict=True)
            ),
            return_exceptions=True,
        )
        return envelopes, publishing

    async def _settle(
        self,
        conn: Connection,
        envelopes: list[Envelope],
        publishing: asyncio.Future[list[BaseException | None]],
    ) -> tuple[int, int]:
        """Wait for the batch's confirms, then mark what was confirmed sent (still inside the
        transaction that locked the rows) and count the failures on the others: ``(sent,
        failed)``. The caller raises for failures once that transaction has committed."""
        if not envelopes:
            await publishing
            return 0, 0
        results = await publishing
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
        return len(sent), len(failed)

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

    async def _connection(self, lane: int) -> asyncpg.Connection | None:
        """The lane's own connection (lane 0: the listening one), opened again if it was lost;
        ``None``: use the pool. Own connections keep the lanes from waiting on a pool that the
        consumers have checked out."""
        if lane == 0:
            await self._listen()
            listener = self._listener
            return listener if listener is not None and not listener.is_closed() else None
        conn = self._own.get(lane)
        if conn is not None and not conn.is_closed():
            return conn
        try:
            conn = self._own[lane] = await asyncpg.connect(self.dsn)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("outbox relay lane %d cannot connect (using the pool): %r", lane, exc)
            self._own.pop(lane, None)
            return None
        return conn

    def _on_notify(self, *args: Any) -> None:
        self._wake.set()

    async def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None

    async def _run(self) -> None:
        await self._listen()
        lanes = [
            asyncio.create_task(self._lane(i), name=f"outbox-relay-{i}") for i in range(self.lanes)
        ]
        try:
            await asyncio.gather(*lanes)
        finally:
            for lane in lanes:
                lane.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)

    async def _await_work(self) -> None:
        """Until rows may be waiting: a NOTIFY, a full batch or a failure before, or the
        poll."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _lane(self, index: int) -> None:
        """One lane of the pipeline: lanes take turns to lock a batch and start publishing it,
        then each waits for its own confirms and marks its rows while the next lane is already
        locking and sending the following batch (``SKIP LOCKED`` passes over the rows in
        flight). Lane 0 runs on the listening connection when there is one, and does the
        housekeeping (purge, gauges)."""
        backoff = Backoff(base=self.retry_base, cap=self.retry_cap)
        observed = purged = -float("inf")
        while True:
            try:
                async with contextlib.AsyncExitStack() as stack:
                    async with self._turn:
                        await self._await_work()
                        self._wake.clear()
                        own = await self._connection(index)
                        if own is not None:
                            conn: Connection = own
                        else:
                            conn = await stack.enter_async_context(self.pool.acquire())
                        await stack.enter_async_context(conn.transaction())
                        envelopes, publishing = await self._select_and_send(conn)
                        if len(envelopes) == self.batch_size:
                            self._wake.set()  # more may be waiting: the next lane goes on
                    _, failed = await self._settle(conn, envelopes, publishing)
                _raise_if(failed, len(envelopes))
                if index == 0:
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
                self._wake.set()  # try again rather than wait for a NOTIFY


def _trace_of(headers: str | None) -> dict[str, str] | None:
    """The trace context headers stored with a row (``None``: none, or not readable)."""
    if headers is None:
        return None
    try:
        stored = orjson.loads(headers)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(stored, dict):
        return None
    trace = {k: v for k in TRACE_HEADERS if isinstance(v := stored.get(k), str)}
    return trace or None


def _raise_if(failed: int, of: int) -> None:
    """``PublishError`` when some of a batch's ``of`` events were not confirmed."""
    if failed:
        raise PublishError(f"{failed} of {of} outbox events not confirmed")

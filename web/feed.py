"""Where the dashboard's events come from: a queue of its own per dashboard instance.

Every dashboard must see every event (two dashboards are two audiences, not competing
consumers), and a dashboard that goes away must leave nothing behind. ``core.bus`` consumes
durable, shared queues only, which is right for services and wrong here, so:

- over RabbitMQ, ``AmqpFeed`` binds an exclusive, auto-deleted queue (gone with the connection),
  bounded (``x-max-length``, oldest dropped first), consumed without acknowledgements: telemetry
  is never redelivered, retried or parked; it reconnects by itself;
- over the in-memory transport (single-process mode, tests), ``subscribe_in_memory`` subscribes
  the app's ``Bus`` on a queue named after the instance, whose handler never fails.

A body that is not an envelope (or larger than ``max_body``) is dropped and reported to
``on_reject``; the envelope's content is validated by the sink (``DashboardState.apply``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import aiormq
from aiormq.abc import AbstractConnection, DeliveredMessage
from pydantic import ValidationError

from core.bus import Bus, Envelope, Message, RetryPolicy

__all__ = ["FEED_PATTERNS", "AmqpFeed", "subscribe_in_memory"]

log = logging.getLogger("web.feed")

FEED_PATTERNS = (
    "metrics.snapshot",
    "order.*",
    "inventory.*",
    "payment.*",
    "user.registered",
    "product.*",
)

Sink = Callable[[Envelope], object]


def subscribe_in_memory(
    bus: Bus, queue: str, sink: Sink, patterns: Sequence[str] = FEED_PATTERNS
) -> None:
    """Subscribe ``bus`` (before it starts consuming) to ``patterns`` on ``queue``."""

    async def handle(message: Message) -> None:
        try:
            sink(message.envelope)
        except Exception:  # a dashboard bug must not park events
            log.exception("the dashboard could not take %s", message.envelope.type)

    for pattern in patterns:
        bus.subscribe(pattern, handle, queue=queue, retry=RetryPolicy(delays=()), prefetch=256)


class AmqpFeed:
    """An exclusive, auto-deleted RabbitMQ queue bound to ``patterns``, feeding ``sink``."""

    def __init__(
        self,
        url: str,
        queue: str,
        sink: Sink,
        *,
        patterns: Sequence[str] = FEED_PATTERNS,
        exchange: str = "aioshop.events",
        max_length: int = 10_000,
        connect_timeout: float = 5.0,
        reconnect_delays: Sequence[float] = (0.2, 0.5, 1.0, 2.0, 5.0),
        max_body: int = 1024 * 1024,
        on_reject: Callable[[], object] | None = None,
    ) -> None:
        self.url = url
        self.queue = queue
        self.sink = sink
        self.patterns = tuple(patterns)
        self.exchange = exchange
        self.max_length = max_length
        self.connect_timeout = connect_timeout
        self.reconnect_delays = tuple(reconnect_delays)
        self.max_body = max_body
        self.on_reject = on_reject
        self.received = 0
        self.rejected = 0
        self._connection: AbstractConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()

    @property
    def connected(self) -> bool:
        """Whether the queue is consumed right now."""
        connection = self._connection
        return connection is not None and not connection.is_closed

    async def start(self) -> None:
        """Start consuming; returns after the first attempt (reconnects in the background)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dashboard-feed")
            await self._attempted.wait()

    async def stop(self) -> None:
        """Stop consuming and close the connection (the queue goes with it)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close()

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.connect_timeout):
                    await connection.close()

    async def _connect(self) -> AbstractConnection:
        async with asyncio.timeout(self.connect_timeout):
            connection: AbstractConnection = await aiormq.connect(self.url)
            try:
                channel = await connection.channel()
                await channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
                await channel.queue_declare(
                    self.queue,
                    durable=False,
                    exclusive=True,
                    auto_delete=True,
                    arguments={"x-max-length": self.max_length, "x-overflow": "drop-head"},
                )
                for pattern in self.patterns:
                    await channel.queue_bind(self.queue, self.exchange, routing_key=pattern)
                await channel.basic_qos(prefetch_count=512)
                await channel.basic_consume(self.queue, self._on_message, no_ack=True)
            except BaseException:
                with contextlib.suppress(Exception):
                    await connection.close()
                raise
        return connection

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                self._connection = await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # retried forever, with backoff
                delay = self.reconnect_delays[min(failures, len(self.reconnect_delays) - 1)]
                failures += 1
                log.warning("dashboard feed cannot connect (%r), retrying in %.1f s", exc, delay)
                self._attempted.set()
                await asyncio.sleep(delay)  # reconnect backoff
                continue
            failures = 0
            self._attempted.set()
            log.info("dashboard feed consuming %s", self.queue)
            closing = self._connection.closing
            try:
                await asyncio.wait([closing])
            finally:
                closing.cancel()
            self._connection = None
            log.warning("dashboard feed lost its connection, reconnecting")
            await asyncio.sleep(self.reconnect_delays[0])  # reconnect backoff

    async def _on_message(self, message: DeliveredMessage) -> None:
        try:
            if len(message.body) > self.max_body:
                raise ValueError("too large")
            envelope = Envelope.from_bytes(message.body)
        except (ValidationError, ValueError):
            self.rejected += 1
            if self.on_reject is not None:
                self.on_reject()
            log.warning("dashboard feed: not an envelope on %.255s", message.routing_key)
            return
        self.received += 1
        try:
            self.sink(envelope)
        except Exception:
            log.exception("the dashboard could not take %s", envelope.type)

"""Broadcast subscriptions over AMQP: a private queue per subscriber, on the shared connection.

Each subscription declares an exclusive, auto-deleted queue (gone with its consumer or its
connection), bounded by ``x-max-length`` with the oldest dropped first, bound to its patterns,
and consumes it without acknowledgements: telemetry is never redelivered, retried or parked. A
task keeps it attached: whenever the connection or only its channel comes back, and after the
broker cancelled its consumer (its queue deleted, its node failed), it declares the queue again,
waiting with ``core.retry.Backoff`` between attempts; it is not ``connected`` meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage

from core.bus.amqp.common import cancelled_by_caller, public_headers, wait_closing
from core.bus.amqp.connection import Link
from core.bus.transport import BroadcastSubscription, Incoming, IncomingHandler
from core.retry import Backoff

__all__ = ["AmqpBroadcast"]

log = logging.getLogger("core.bus.amqp")


class AmqpBroadcast(BroadcastSubscription):
    """One broadcast subscriber; ``start`` it, ``stop`` it (its queue is deleted)."""

    def __init__(
        self,
        link: Link,
        queue: str,
        patterns: tuple[str, ...],
        handler: IncomingHandler,
        *,
        max_length: int,
        forget: Callable[[AmqpBroadcast], None],
    ) -> None:
        self.queue = queue
        self.patterns = patterns
        self._link = link
        self._handler = handler
        self._max_length = max_length
        self._forget = forget
        self._restarts: Backoff = link.backoff()
        self._channel: AbstractChannel | None = None
        self._consumer_tag: str | None = None
        self._attached = asyncio.Event()
        self._cancelled = asyncio.Event()  # the broker cancelled the current consumer
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def connected(self) -> bool:
        """Whether the private queue is consumed right now (not after the broker cancelled it)."""
        channel = self._channel
        return (
            self._attached.is_set()
            and not self._cancelled.is_set()
            and channel is not None
            and not channel.is_closed
        )

    def start(self) -> None:
        """Start (or restart) the task that keeps the subscription attached."""
        if not self._stopped and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run(), name=f"bus:broadcast:{self.queue}")

    async def wait_attached(self) -> bool:
        """Wait (up to the connect timeout) for the queue to be consumed; whether it is."""
        try:
            async with asyncio.timeout(self._link.connect_timeout):
                await self._attached.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Stop consuming and delete the private queue (it goes anyway with the connection)."""
        self._stopped = True
        self._forget(self)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        channel, self._channel = self._channel, None
        self._attached.clear()
        if channel is not None and not channel.is_closed:
            try:
                async with asyncio.timeout(self._link.connect_timeout):
                    if self._consumer_tag is not None:
                        # Ours first: deleting a consumed queue makes the broker cancel it,
                        # which aiormq logs as a warning.
                        await channel.basic_cancel(self._consumer_tag)
                    await channel.queue_delete(self.queue)
            except Exception as exc:  # the connection is going: the queue goes with it
                log.debug("deleting broadcast queue %s failed: %r", self.queue, exc)
            await self._link.close_quietly(channel)

    async def _run(self) -> None:
        link = self._link
        while True:
            await link.ready.wait()
            connection = link.connection
            if connection is None or connection.is_closed:
                await self._restarts.wait()  # the supervisor is reconnecting
                continue
            self._cancelled = cancelled = asyncio.Event()
            try:
                channel = await self._open(connection, cancelled)
            except asyncio.CancelledError:
                if cancelled_by_caller():
                    raise
                channel, error = None, repr(ConnectionError("connection closed"))
            except Exception as exc:  # retried with backoff, like the connection itself
                channel, error = None, repr(exc)
            if channel is None:
                log.warning(
                    "cannot subscribe broadcast %s (%s), attempt %d failed",
                    self.queue,
                    error,
                    self._restarts.failures + 1,
                )
                await self._restarts.wait()
                continue
            self._restarts.reset()
            self._channel = channel
            self._attached.set()
            log.info("broadcast %s consuming %s", self.queue, ", ".join(self.patterns))
            try:
                await wait_closing(channel, asyncio.ensure_future(cancelled.wait()))
            finally:
                self._attached.clear()
            if cancelled.is_set():
                # The queue was deleted, or its node failed: the channel is still open but
                # nothing arrives on it any more. Close it and declare the queue again.
                log.warning("the broker cancelled broadcast %s: subscribing again", self.queue)
                if self._channel is channel:
                    self._channel = None
                await self._link.close_quietly(channel)
            else:
                log.warning("broadcast %s lost its channel, subscribing again", self.queue)
            await self._restarts.wait()

    async def _open(
        self, connection: AbstractConnection, cancelled: asyncio.Event
    ) -> AbstractChannel:
        link = self._link
        async with asyncio.timeout(link.connect_timeout):
            channel = await connection.channel(publisher_confirms=False)
            try:
                channel.on_consumer_cancel_callbacks.add(lambda _frame: cancelled.set())
                await channel.queue_declare(
                    self.queue,
                    durable=False,
                    exclusive=True,
                    auto_delete=True,
                    arguments={"x-max-length": self._max_length, "x-overflow": "drop-head"},
                )
                for pattern in self.patterns:
                    await channel.queue_bind(self.queue, link.exchange, routing_key=pattern)
                ok = await channel.basic_consume(self.queue, self._on_message, no_ack=True)
            except BaseException:
                await link.close_quietly(channel)
                raise
        self._consumer_tag = ok.consumer_tag
        return channel

    async def _on_message(self, message: DeliveredMessage) -> None:
        incoming = Incoming(
            body=message.body,
            routing_key=message.routing_key or "",
            queue=self.queue,
            message_id=message.header.properties.message_id,
            headers=public_headers(message.header.properties.headers or {}),
        )
        try:
            await self._handler(incoming)
        except Exception:  # a broadcast is never redelivered: log and go on
            log.exception("broadcast handler on %s failed for %s", self.queue, incoming.message_id)

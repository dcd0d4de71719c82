"""Consuming durable queues over AMQP: prefetch, manual acks, the retry ladder, parking.

The queues (with their delay and parking queues) are ``topology.Topology``'s. A channel per
consumer with ``basic_qos(prefetch)`` and manual acks. A message is acknowledged
only after its handler returned, or after a copy of it was confirmed into the retry or parking
queue. If that copy cannot be published, the original is not acknowledged: the broker
redelivers it (at least once; the inbox makes handlers idempotent). The attempt number travels
in the ``x-attempt`` header, the original routing key in ``x-routing-key``.

Each consumer runs its own task that re-opens its channel whenever the connection (or only its
channel) comes back, and after the broker cancelled it, waiting with ``core.retry.Backoff``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from pamqp.common import FieldTable

from core.bus.amqp.common import (
    ATTEMPT,
    ATTEMPTS,
    BROKER_ERRORS,
    LAST_ERROR,
    MAX_ERROR_TEXT,
    REASON,
    ROUTING_KEY,
    cancelled_by_caller,
    copy_properties,
    delay_queue_name,
    parking_queue_name,
    public_headers,
    routing_key_of,
    wait_closing,
)
from core.bus.amqp.connection import Link
from core.bus.amqp.publisher import Publisher
from core.bus.amqp.topology import Topology
from core.bus.matching import validate_pattern
from core.bus.transport import (
    BusError,
    Incoming,
    IncomingHandler,
    PermanentFailure,
    PublishError,
    RetryPolicy,
)
from core.retry import Backoff

__all__ = ["Consumers"]

log = logging.getLogger("core.bus.amqp")


@dataclass(eq=False)
class _Consumer:
    queue: str
    handler: IncomingHandler
    prefetch: int
    retry: RetryPolicy
    restarts: Backoff
    forwards: Backoff
    task: asyncio.Task[None] | None = None
    channel: AbstractChannel | None = None
    consumer_tag: str | None = None
    attached: asyncio.Event = field(default_factory=asyncio.Event)


class Consumers:
    """The durable queues of a transport and the consumers on them."""

    def __init__(
        self, link: Link, topology: Topology, publisher: Publisher, *, drain_timeout: float
    ) -> None:
        self.link = link
        self.topology = topology
        self.publisher = publisher
        self.drain_timeout = drain_timeout
        self.stopping = False
        self._consumers: list[_Consumer] = []
        self._inflight: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def consume(
        self,
        queue: str,
        patterns: Sequence[str],
        handler: IncomingHandler,
        *,
        prefetch: int,
        retry: RetryPolicy,
    ) -> None:
        """See ``AmqpTransport.consume``."""
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        for pattern in patterns:
            validate_pattern(pattern)
        link = self.link
        consumer = _Consumer(queue, handler, prefetch, retry, link.backoff(), link.backoff())
        async with link.topology_lock:
            await self.topology.add(queue, patterns, retry.delays)
            self._consumers.append(consumer)
            if link.running:
                self._start(consumer)
        if link.connected:
            try:
                async with asyncio.timeout(link.connect_timeout):
                    await consumer.attached.wait()
            except TimeoutError:
                log.warning("consumer on %s not attached yet; it keeps trying", queue)

    def start_all(self) -> None:
        """Start (or restart) a task per consumer."""
        self.stopping = False
        for consumer in self._consumers:
            self._start(consumer)

    async def stop_all(self) -> None:
        """Cancel the consumers, let handlers in flight finish (bounded by ``drain_timeout``).

        Messages whose handler has not finished by then are not acknowledged: the broker
        delivers them again, to another instance or after the next start.
        """
        self.stopping = True
        consumers, self._consumers = self._consumers, []
        await asyncio.gather(*(self._cancel(c) for c in consumers))
        tasks = [c.task for c in consumers if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=self.drain_timeout)
            for task in pending:
                log.warning(
                    "handler still running after %.1f s at stop: cancelled", self.drain_timeout
                )
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _cancel(self, consumer: _Consumer) -> None:
        channel, tag = consumer.channel, consumer.consumer_tag
        if channel is None or tag is None or channel.is_closed:
            return
        try:
            async with asyncio.timeout(self.link.connect_timeout):
                await channel.basic_cancel(tag)
        except (TimeoutError, *BROKER_ERRORS) as exc:
            log.debug("cancelling consumer %s on %s failed: %r", tag, consumer.queue, exc)

    def _start(self, consumer: _Consumer) -> None:
        if consumer.task is None or consumer.task.done():
            consumer.task = asyncio.create_task(
                self._run(consumer), name=f"bus:consume:{consumer.queue}"
            )

    async def _run(self, consumer: _Consumer) -> None:
        """Keep one consumer attached: (re)open its channel on every connection."""
        link = self.link
        while True:
            await link.ready.wait()
            connection = link.connection
            if connection is None or connection.is_closed:
                await consumer.restarts.wait()  # the supervisor is reconnecting
                continue
            cancelled = asyncio.Event()
            try:
                channel = await self._open(connection, consumer, cancelled)
            except asyncio.CancelledError:
                if cancelled_by_caller():
                    raise
                channel = None
                error: BaseException = ConnectionError("connection closed")
            except Exception as exc:  # retried with backoff, like the connection itself
                channel, error = None, exc
            if channel is None:
                log.warning(
                    "cannot consume from %s (%r), attempt %d failed",
                    consumer.queue,
                    error,
                    consumer.restarts.failures + 1,
                )
                await consumer.restarts.wait()
                continue
            consumer.restarts.reset()
            consumer.attached.set()
            log.info("consuming from %s (prefetch %d)", consumer.queue, consumer.prefetch)
            try:
                await wait_closing(channel, asyncio.ensure_future(cancelled.wait()))
            finally:
                consumer.attached.clear()
                consumer.channel = consumer.consumer_tag = None
            if cancelled.is_set():
                log.warning(
                    "the broker cancelled the consumer on %s: restarting it", consumer.queue
                )
                await link.close_quietly(channel)
            await consumer.restarts.wait()

    async def _open(
        self, connection: AbstractConnection, consumer: _Consumer, cancelled: asyncio.Event
    ) -> AbstractChannel:
        async with asyncio.timeout(self.link.connect_timeout):
            channel = await connection.channel(publisher_confirms=False)
            try:
                await self.topology.declare(channel, consumer.queue)
                await channel.basic_qos(prefetch_count=consumer.prefetch)
                channel.on_consumer_cancel_callbacks.add(lambda _frame: cancelled.set())
                ok = await channel.basic_consume(
                    consumer.queue, functools.partial(self._on_message, consumer), no_ack=False
                )
            except BaseException:
                await self.link.close_quietly(channel)
                raise
        consumer.channel, consumer.consumer_tag = channel, ok.consumer_tag
        return channel

    # -- messages ----------------------------------------------------------------------------

    async def _on_message(self, consumer: _Consumer, message: DeliveredMessage) -> None:
        # Called in a task of aiormq's channel, which the channel cancels when it closes: the
        # handler runs in a task of ours, so a lost channel does not interrupt it half-way.
        if self.stopping:
            return  # left unacknowledged: redelivered after the connection closes
        task = asyncio.create_task(self._handle(consumer, message))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _handle(self, consumer: _Consumer, message: DeliveredMessage) -> None:
        try:
            incoming = _incoming(consumer.queue, message)
        except ValueError as exc:
            await self._park(consumer, message, routing_key_of(message), 1, f"unparseable: {exc}")
            return
        try:
            await consumer.handler(incoming)
        except asyncio.CancelledError:
            raise
        except PermanentFailure as exc:
            reason = f"permanent failure: {exc}"
            await self._park(consumer, message, incoming.routing_key, incoming.attempt, reason)
        except Exception as exc:
            delay = consumer.retry.delay_for(incoming.attempt)
            if delay is None:
                reason = f"failed {incoming.attempt} times: {exc!r}"
                await self._park(consumer, message, incoming.routing_key, incoming.attempt, reason)
            else:
                await self._retry(consumer, message, incoming, delay, exc)
        else:
            await self._settle(message, ack=True)

    async def _retry(
        self,
        consumer: _Consumer,
        message: DeliveredMessage,
        incoming: Incoming,
        delay: float,
        exc: Exception,
    ) -> None:
        log.info(
            "attempt %d of %s on %s failed (%r): retrying in %s s",
            incoming.attempt,
            incoming.message_id,
            consumer.queue,
            exc,
            delay,
        )
        headers: FieldTable = {
            **public_headers(message.header.properties.headers or {}),
            ATTEMPT: incoming.attempt + 1,
            LAST_ERROR: repr(exc)[:MAX_ERROR_TEXT],
            ROUTING_KEY: incoming.routing_key,
        }
        await self._forward(consumer, message, delay_queue_name(consumer.queue, delay), headers)

    async def _park(
        self,
        consumer: _Consumer,
        message: DeliveredMessage,
        routing_key: str,
        attempts: int,
        reason: str,
    ) -> None:
        log.warning(
            "parking %s on %s: %s", message.header.properties.message_id, consumer.queue, reason
        )
        headers: FieldTable = {
            **public_headers(message.header.properties.headers or {}),
            REASON: reason[: MAX_ERROR_TEXT * 2],
            ATTEMPTS: attempts,
            ROUTING_KEY: routing_key,
        }
        await self._forward(consumer, message, parking_queue_name(consumer.queue), headers)

    async def _forward(
        self, consumer: _Consumer, message: DeliveredMessage, queue: str, headers: FieldTable
    ) -> None:
        """Publish a copy of ``message`` to ``queue`` with a confirm, then ack the original."""
        if message.channel.is_closed:
            return  # the broker already took the original back: it will be delivered again
        try:
            await self.publisher.publish(
                "", queue, message.body, copy_properties(message, headers), mandatory=True
            )
        except PublishError as exc:
            log.error(
                "could not move %s to %s (%r): left for redelivery",
                message.header.properties.message_id,
                queue,
                exc,
            )
            connection = self.link.connection
            if not message.channel.is_closed and connection is not None:
                # The connection is up but the copy failed (say, someone deleted the delay
                # queue): restore the topology, then give the message back to its queue after
                # a pause rather than hold a prefetch slot forever.
                with contextlib.suppress(BusError):
                    await self.topology.declare_now(connection, consumer.queue)
                await consumer.forwards.wait()
                await self._settle(message, ack=False)
            return
        consumer.forwards.reset()
        await self._settle(message, ack=True)

    async def _settle(self, message: DeliveredMessage, *, ack: bool) -> None:
        tag = message.delivery_tag
        if tag is None:
            return
        channel = message.channel
        try:
            if ack and not channel.connection.write_queue.full():
                # Queued for the connection's writer, which has room: nothing to wait for (the
                # broker answers no ack, and one lost with the connection is a redelivery).
                await channel.basic_ack(tag, wait=False)
                return
            async with asyncio.timeout(self.publisher.publish_timeout):
                if ack:
                    await channel.basic_ack(tag, wait=False)
                else:
                    await channel.basic_nack(tag, requeue=True)
        except asyncio.CancelledError:
            if cancelled_by_caller():
                raise
        except (TimeoutError, *BROKER_ERRORS) as exc:
            # The channel is gone, and with it the delivery: the broker redelivers the message.
            log.info(
                "could not %s %s (%r): it will be redelivered",
                "ack" if ack else "nack",
                message.header.properties.message_id,
                exc,
            )


def _incoming(queue: str, message: DeliveredMessage) -> Incoming:
    headers = message.header.properties.headers or {}
    attempt = headers.get(ATTEMPT, 1)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise ValueError(f"invalid {ATTEMPT} header {attempt!r}")
    return Incoming(
        body=message.body,
        routing_key=routing_key_of(message),
        queue=queue,
        message_id=message.header.properties.message_id,
        attempt=attempt,
        headers=public_headers(headers),
    )

"""The AMQP transport: RabbitMQ through aiormq, keeping the contract of ``core.bus.transport``.

Topology, for the topic exchange ``aioshop.events`` and every consumed queue ``Q``:

- ``Q``: durable, bound to the exchange with each pattern of its subscriptions;
- ``Q.retry.<ms>``: durable, one per delay of the retry ladder, with ``x-message-ttl`` = the delay
  and a dead-letter to the default exchange with routing key ``Q``: a message published there
  waits out the delay and flows back into ``Q``;
- ``Q.parked``: durable, where a message goes after its last attempt; ``parked`` reads it,
  ``replay`` moves it back to ``Q``.

Publishing: persistent JSON messages on a publisher-confirm channel; every publish (including
waiting for a connection while there is none) is bounded by ``publish_timeout`` and raises
``PublishError`` (``PublishTimeout`` without a confirm) instead of hanging.

Consuming: a channel per consumer with ``basic_qos(prefetch)`` and manual acks. A message is
acknowledged only after its handler returned, or after a copy of it was confirmed into the retry
or parking queue. If that copy cannot be published, the original is not acknowledged: the broker
redelivers it (at least once; the inbox makes handlers idempotent). The attempt number travels in
the ``x-attempt`` header, the original routing key in ``x-routing-key``.

Reconnecting: a supervisor task connects, declares the exchange and every known queue, binding,
delay and parking queue, then waits for the connection to close and starts over with backoff,
forever until ``stop``. Each consumer runs its own task that re-opens its channel whenever the
connection (or only its channel) comes back, and after the broker cancelled it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from aiormq.tools import censor_url
from pamqp import commands as spec
from pamqp.common import FieldTable
from yarl import URL

from core.bus.matching import validate_pattern
from core.bus.transport import (
    BusError,
    Incoming,
    IncomingHandler,
    ParkedMessage,
    PermanentFailure,
    PublishError,
    PublishTimeout,
    RetryPolicy,
    Transport,
)

__all__ = ["AmqpTransport", "delay_queue_name", "parking_queue_name"]

log = logging.getLogger("core.bus.amqp")

CONTENT_TYPE: Final = "application/json"
PERSISTENT: Final = 2

ATTEMPT: Final = "x-attempt"
ROUTING_KEY: Final = "x-routing-key"
LAST_ERROR: Final = "x-last-error"
REASON: Final = "x-reason"
ATTEMPTS: Final = "x-attempts"
_OWN_HEADERS: Final = frozenset({ATTEMPT, ROUTING_KEY, LAST_ERROR, REASON, ATTEMPTS})
# Added by RabbitMQ when a delay queue dead-letters a message back: not the publisher's.
_BROKER_HEADER_PREFIXES: Final = ("x-death", "x-first-death-", "x-last-death-")
_MAX_ERROR_TEXT: Final = 500

# What aiormq raises when the connection or channel is gone: its own errors, a closed channel
# (ChannelInvalidStateError is a RuntimeError, as is "connection closed" from channel()), and
# the socket's errors.
_BROKER_ERRORS: Final = (aiormq.AMQPError, RuntimeError, ConnectionError, OSError, EOFError)


def delay_queue_name(queue: str, delay: float) -> str:
    """The delay queue of ``queue`` for a retry after ``delay`` seconds."""
    return f"{queue}.retry.{_ms(delay)}"


def parking_queue_name(queue: str) -> str:
    """The parking queue of ``queue``."""
    return f"{queue}.parked"


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _cancelled_by_caller() -> bool:
    """Whether a ``CancelledError`` is a real cancellation of the running task.

    aiormq rejects the futures of a closed connection with the close reason, which can be a
    ``CancelledError`` although nobody cancelled the waiting task.
    """
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


@dataclass
class _QueueSpec:
    patterns: set[str] = field(default_factory=set)
    delays: set[float] = field(default_factory=set)


@dataclass(eq=False)
class _Consumer:
    queue: str
    handler: IncomingHandler
    prefetch: int
    retry: RetryPolicy
    task: asyncio.Task[None] | None = None
    channel: AbstractChannel | None = None
    consumer_tag: str | None = None
    attached: asyncio.Event = field(default_factory=asyncio.Event)


class AmqpTransport(Transport):
    """RabbitMQ transport: confirms, manual acks, prefetch, retry ladder, parking, reconnects.

    ``url`` is an AMQP URL (``amqp://user:password@host:5672/vhost``); aiormq reads options
    from its query string, e.g. ``?name=orders-1`` names the connection in the management UI
    and ``?heartbeat=30`` sets the heartbeat. ``reconnect_delays`` are the successive waits
    between failed connection attempts (the last one repeats); ``connect_timeout`` bounds one
    attempt (connecting and restoring the topology); ``drain_timeout`` bounds how long ``stop``
    waits for handlers in flight.
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str = Transport.exchange,
        publish_timeout: float = 5.0,
        reconnect_delays: Sequence[float] = (0.1, 0.5, 1, 2, 5),
        connect_timeout: float = 5.0,
        drain_timeout: float = 10.0,
    ) -> None:
        if not reconnect_delays:
            raise ValueError("reconnect_delays needs at least one delay")
        self.exchange = exchange
        self._url = url
        self._safe_url = str(censor_url(URL(url)))
        self._publish_timeout = publish_timeout
        self._reconnect_delays = tuple(float(d) for d in reconnect_delays)
        self._connect_timeout = connect_timeout
        self._drain_timeout = drain_timeout

        self._queues: dict[str, _QueueSpec] = {}
        self._consumers: list[_Consumer] = []
        self._inflight: set[asyncio.Task[None]] = set()

        self._connection: AbstractConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._ready = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self._topology_lock = asyncio.Lock()
        self._channel_lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._accepting = False  # publish() allowed: between start() and the end of stop()
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a connection is up and its topology restored (publishing can proceed)."""
        connection = self._connection
        return self._ready.is_set() and connection is not None and not connection.is_closed

    async def start(self) -> None:
        """Start the connection supervisor and wait for its first attempt (not for success).

        When the broker is unreachable this returns anyway: the supervisor keeps trying in the
        background, publishes wait for it up to ``publish_timeout`` and consumers start once it
        succeeds.
        """
        if self._supervisor is not None:
            return
        self._stopping = False
        self._accepting = True
        self._first_attempt.clear()
        self._supervisor = asyncio.create_task(self._supervise(), name="bus:amqp-supervisor")
        for consumer in self._consumers:
            self._start_consumer(consumer)
        await self._first_attempt.wait()

    async def stop(self) -> None:
        """Cancel the consumers, let handlers in flight finish (bounded), disconnect.

        Messages whose handler has not finished by ``drain_timeout`` are not acknowledged: the
        broker delivers them again, to another instance or after the next start.
        """
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is None:
            return
        self._stopping = True
        consumers, self._consumers = self._consumers, []
        await asyncio.gather(*(self._cancel_consumer(c) for c in consumers))
        tasks = [c.task for c in consumers if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=self._drain_timeout)
            for task in pending:
                log.warning(
                    "handler still running after %.1f s at stop: cancelled", self._drain_timeout
                )
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._accepting = False
        supervisor.cancel()
        await asyncio.gather(supervisor, return_exceptions=True)
        connection, self._connection = self._connection, None
        self._publish_channel = None
        self._ready.clear()
        if connection is not None and not connection.is_closed:
            await self._close_quietly(connection)

    async def _cancel_consumer(self, consumer: _Consumer) -> None:
        channel, tag = consumer.channel, consumer.consumer_tag
        if channel is None or tag is None or channel.is_closed:
            return
        try:
            async with asyncio.timeout(self._connect_timeout):
                await channel.basic_cancel(tag)
        except (TimeoutError, *_BROKER_ERRORS) as exc:
            log.debug("cancelling consumer %s on %s failed: %r", tag, consumer.queue, exc)

    async def _close_quietly(self, resource: AbstractConnection | AbstractChannel) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout):
                await resource.close()
        except (TimeoutError, *_BROKER_ERRORS) as exc:
            log.debug("closing %r failed: %r", resource, exc)
        except asyncio.CancelledError:
            if _cancelled_by_caller():
                raise

    def _backoff(self, failures: int) -> float:
        return self._reconnect_delays[min(failures, len(self._reconnect_delays) - 1)]

    # -- the supervisor ----------------------------------------------------------------------

    async def _supervise(self) -> None:
        failures = 0
        while True:
            try:
                connection = await self._connect()
            except asyncio.CancelledError:
                if _cancelled_by_caller():
                    raise
                connection = None
                error: BaseException = ConnectionError("connection closed while connecting")
            except Exception as exc:  # any failure to connect is retried, forever
                connection, error = None, exc
            self._first_attempt.set()
            if connection is None:
                delay = self._backoff(failures)
                failures += 1
                log.warning(
                    "cannot connect to %s (%r), next attempt in %.1f s",
                    self._safe_url,
                    error,
                    delay,
                )
                await asyncio.sleep(delay)  # reconnect backoff
                continue
            failures = 0
            log.info("connected to %s, topology restored", self._safe_url)
            closing = connection.closing
            try:
                await asyncio.wait([closing])
            finally:
                closing.cancel()  # only this observer: stop() closes the connection itself
            self._ready.clear()
            if self._connection is connection:
                self._connection = None
                self._publish_channel = None
            reason = None if closing.cancelled() else closing.exception()
            log.warning("connection to %s lost (%r), reconnecting", self._safe_url, reason)
            await asyncio.sleep(self._backoff(0))  # reconnect backoff

    async def _connect(self) -> AbstractConnection:
        """Connect, open the publish channel and restore the topology, within the timeout."""
        async with asyncio.timeout(self._connect_timeout):
            connection: AbstractConnection = await aiormq.connect(self._url)
        try:
            async with asyncio.timeout(self._connect_timeout):
                channel = await connection.channel(publisher_confirms=True)
                await channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
                async with self._topology_lock:
                    for queue, queue_spec in list(self._queues.items()):
                        channel = await self._declare_or_skip(
                            connection, channel, queue, queue_spec
                        )
                    self._connection = connection
                    self._publish_channel = channel
                    self._ready.set()
        except BaseException:
            await self._close_quietly(connection)
            raise
        return connection

    async def _declare_or_skip(
        self,
        connection: AbstractConnection,
        channel: AbstractChannel,
        queue: str,
        queue_spec: _QueueSpec,
    ) -> AbstractChannel:
        """Declare one queue's topology; a queue the broker refuses is logged and skipped.

        A channel error (a queue declared elsewhere with other arguments) closes the channel,
        so a fresh one is returned; the other queues still get restored.
        """
        try:
            await self._declare(channel, queue, queue_spec)
        except aiormq.AMQPChannelError as exc:
            log.error("cannot restore the topology of queue %s: %r", queue, exc)
            return await connection.channel(publisher_confirms=True)
        return channel

    async def _declare(self, channel: AbstractChannel, queue: str, queue_spec: _QueueSpec) -> None:
        """Declare ``queue`` with its bindings, delay queues and parking queue (idempotent)."""
        await channel.queue_declare(queue, durable=True)
        for pattern in sorted(queue_spec.patterns):
            await channel.queue_bind(queue, self.exchange, routing_key=pattern)
        for delay in sorted(queue_spec.delays):
            arguments: FieldTable = {
                "x-message-ttl": _ms(delay),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
            }
            await channel.queue_declare(
                delay_queue_name(queue, delay), durable=True, arguments=arguments
            )
        await channel.queue_declare(parking_queue_name(queue), durable=True)

    # -- publishing --------------------------------------------------------------------------

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish a persistent JSON message to the exchange and wait for the broker's confirm.

        Waits for a connection if there is none, all within ``publish_timeout``; raises
        ``PublishTimeout`` when no confirm came in time, ``PublishError`` on anything else.
        """
        properties = spec.Basic.Properties(
            content_type=CONTENT_TYPE,
            delivery_mode=PERSISTENT,
            message_id=message_id,
            headers=dict(headers) if headers else None,
        )
        await self._publish(self.exchange, routing_key, body, properties)

    async def _publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: spec.Basic.Properties,
        *,
        mandatory: bool = False,
    ) -> None:
        if not self._accepting:
            raise PublishError("the AMQP transport is not running")
        channel: AbstractChannel | None = None
        try:
            async with asyncio.timeout(self._publish_timeout):
                channel = await self._confirm_channel()
                confirm = await channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=properties,
                    mandatory=mandatory,
                )
        except TimeoutError as exc:
            if channel is None:
                raise PublishError(
                    f"no connection to the broker within {self._publish_timeout} s"
                ) from exc
            raise PublishTimeout(
                f"no confirm for {routing_key!r} within {self._publish_timeout} s"
            ) from exc
        except asyncio.CancelledError:
            if _cancelled_by_caller():
                raise
            raise PublishError(f"the connection closed while publishing {routing_key!r}") from None
        except _BROKER_ERRORS as exc:
            raise PublishError(f"publishing {routing_key!r} failed: {exc!r}") from exc
        if not isinstance(confirm, spec.Basic.Ack):
            raise PublishError(f"the broker did not confirm {routing_key!r}: {confirm!r}")

    async def _confirm_channel(self) -> AbstractChannel:
        """The publish channel, waiting for the connection; re-opened if it closed alone."""
        while True:
            await self._ready.wait()
            channel, connection = self._publish_channel, self._connection
            if channel is not None and not channel.is_closed:
                return channel
            if connection is None or connection.is_closed:
                # The supervisor is about to notice: wait for the next connection.
                self._ready.clear()
                continue
            async with self._channel_lock:
                if self._publish_channel is channel and self._connection is connection:
                    log.info("publish channel closed, opening a new one")
                    self._publish_channel = await connection.channel(publisher_confirms=True)

    # -- consuming ---------------------------------------------------------------------------

    async def consume(
        self,
        queue: str,
        patterns: Sequence[str],
        handler: IncomingHandler,
        *,
        prefetch: int = 32,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        """Declare ``queue`` (bindings, delay and parking queues) and start a consumer on it.

        Several calls on one queue make competing consumers. When connected, this returns once
        the queue is bound and (within ``connect_timeout``) the consumer attached; otherwise the
        supervisor declares and starts it on connecting. Raises ``BusError`` if the broker
        refuses the topology (a queue declared elsewhere with other arguments).
        """
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        for pattern in patterns:
            validate_pattern(pattern)
        consumer = _Consumer(queue, handler, prefetch, retry)
        async with self._topology_lock:
            current = self._queues.get(queue, _QueueSpec())
            wanted = _QueueSpec(
                current.patterns | set(patterns), current.delays | set(retry.delays)
            )
            connection = self._connection
            if self.connected and connection is not None:
                await self._declare_now(connection, queue, wanted)
            self._queues[queue] = wanted
            self._consumers.append(consumer)
            if self._supervisor is not None:
                self._start_consumer(consumer)
        if self.connected:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await consumer.attached.wait()
            except TimeoutError:
                log.warning("consumer on %s not attached yet; it keeps trying", queue)

    async def _declare_now(
        self, connection: AbstractConnection, queue: str, queue_spec: _QueueSpec
    ) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout):
                channel = await connection.channel(publisher_confirms=False)
                try:
                    await self._declare(channel, queue, queue_spec)
                finally:
                    await self._close_quietly(channel)
        except aiormq.AMQPChannelError as exc:
            raise BusError(f"the broker refused the topology of queue {queue!r}: {exc!r}") from exc
        except (TimeoutError, *_BROKER_ERRORS) as exc:
            # The connection is going away: the supervisor declares it on reconnecting.
            log.warning("declaring %s failed (%r); it is restored on reconnect", queue, exc)

    def _start_consumer(self, consumer: _Consumer) -> None:
        if consumer.task is None or consumer.task.done():
            consumer.task = asyncio.create_task(
                self._run_consumer(consumer), name=f"bus:consume:{consumer.queue}"
            )

    async def _run_consumer(self, consumer: _Consumer) -> None:
        """Keep one consumer attached: (re)open its channel on every connection."""
        failures = 0
        while True:
            await self._ready.wait()
            connection = self._connection
            if connection is None or connection.is_closed:
                await asyncio.sleep(self._backoff(0))  # the supervisor is reconnecting
                continue
            cancelled = asyncio.Event()
            try:
                channel = await self._open_consumer(connection, consumer, cancelled)
            except asyncio.CancelledError:
                if _cancelled_by_caller():
                    raise
                channel = None
                error: BaseException = ConnectionError("connection closed")
            except Exception as exc:  # retried with backoff, like the connection itself
                channel, error = None, exc
            if channel is None:
                delay = self._backoff(failures)
                failures += 1
                log.warning(
                    "cannot consume from %s (%r), next attempt in %.1f s",
                    consumer.queue,
                    error,
                    delay,
                )
                await asyncio.sleep(delay)  # consumer restart backoff
                continue
            failures = 0
            consumer.attached.set()
            log.info("consuming from %s (prefetch %d)", consumer.queue, consumer.prefetch)
            closing = channel.closing
            broker_cancel = asyncio.ensure_future(cancelled.wait())
            try:
                await asyncio.wait([closing, broker_cancel], return_when=asyncio.FIRST_COMPLETED)
            finally:
                closing.cancel()
                broker_cancel.cancel()
                consumer.attached.clear()
                consumer.channel = consumer.consumer_tag = None
            if cancelled.is_set():
                log.warning(
                    "the broker cancelled the consumer on %s: restarting it", consumer.queue
                )
                await self._close_quietly(channel)
            await asyncio.sleep(self._backoff(0))  # consumer restart backoff

    async def _open_consumer(
        self, connection: AbstractConnection, consumer: _Consumer, cancelled: asyncio.Event
    ) -> AbstractChannel:
        async with asyncio.timeout(self._connect_timeout):
            channel = await connection.channel(publisher_confirms=False)
            try:
                await self._declare(channel, consumer.queue, self._queues[consumer.queue])
                await channel.basic_qos(prefetch_count=consumer.prefetch)
                channel.on_consumer_cancel_callbacks.add(lambda _frame: cancelled.set())
                ok = await channel.basic_consume(
                    consumer.queue, functools.partial(self._on_message, consumer), no_ack=False
                )
            except BaseException:
                await self._close_quietly(channel)
                raise
        consumer.channel, consumer.consumer_tag = channel, ok.consumer_tag
        return channel

    async def _on_message(self, consumer: _Consumer, message: DeliveredMessage) -> None:
        # Called in a task of aiormq's channel, which the channel cancels when it closes: the
        # handler runs in a task of ours, so a lost channel does not interrupt it half-way.
        if self._stopping:
            return  # left unacknowledged: redelivered after the connection closes
        task = asyncio.create_task(self._handle(consumer, message))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _handle(self, consumer: _Consumer, message: DeliveredMessage) -> None:
        try:
            incoming = self._incoming(consumer.queue, message)
        except ValueError as exc:
            await self._park(
                consumer, message, self._routing_key(message), 1, f"unparseable: {exc}"
            )
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

    def _incoming(self, queue: str, message: DeliveredMessage) -> Incoming:
        headers = dict(message.header.properties.headers or {})
        attempt = headers.get(ATTEMPT, 1)
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise ValueError(f"invalid {ATTEMPT} header {attempt!r}")
        return Incoming(
            body=message.body,
            routing_key=self._routing_key(message),
            queue=queue,
            message_id=message.header.properties.message_id,
            attempt=attempt,
            headers=_public_headers(headers),
        )

    @staticmethod
    def _routing_key(message: DeliveredMessage) -> str:
        original = (message.header.properties.headers or {}).get(ROUTING_KEY)
        return original if isinstance(original, str) else (message.routing_key or "")

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
            **_public_headers(message.header.properties.headers or {}),
            ATTEMPT: incoming.attempt + 1,
            LAST_ERROR: repr(exc)[:_MAX_ERROR_TEXT],
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
            **_public_headers(message.header.properties.headers or {}),
            REASON: reason[: _MAX_ERROR_TEXT * 2],
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
            await self._publish(
                "", queue, message.body, _copy_properties(message, headers), mandatory=True
            )
        except PublishError as exc:
            log.error(
                "could not move %s to %s (%r): left for redelivery",
                message.header.properties.message_id,
                queue,
                exc,
            )
            connection = self._connection
            if not message.channel.is_closed and connection is not None:
                # The connection is up but the copy failed (say, someone deleted the delay
                # queue): restore the topology, then give the message back to its queue after
                # a pause rather than hold a prefetch slot forever.
                with contextlib.suppress(BusError):
                    await self._declare_now(
                        connection, consumer.queue, self._queues[consumer.queue]
                    )
                await asyncio.sleep(self._backoff(0))  # retry backoff
                await self._settle(message, ack=False)
            return
        await self._settle(message, ack=True)

    async def _settle(self, message: DeliveredMessage, *, ack: bool) -> None:
        tag = message.delivery_tag
        if tag is None:
            return
        try:
            async with asyncio.timeout(self._publish_timeout):
                if ack:
                    await message.channel.basic_ack(tag)
                else:
                    await message.channel.basic_nack(tag, requeue=True)
        except asyncio.CancelledError:
            if _cancelled_by_caller():
                raise
        except (TimeoutError, *_BROKER_ERRORS) as exc:
            # The channel is gone, and with it the delivery: the broker redelivers the message.
            log.info(
                "could not %s %s (%r): it will be redelivered",
                "ack" if ack else "nack",
                message.header.properties.message_id,
                exc,
            )

    # -- the parking queue -------------------------------------------------------------------

    async def parked(self, queue: str, *, limit: int = 100) -> list[ParkedMessage]:
        """Up to ``limit`` parked messages of ``queue``, oldest first, left in place.

        The messages are fetched without acknowledgement and then returned to the queue with a
        requeueing nack; RabbitMQ puts them back at their positions, but a concurrent reader of
        the parking queue (another ``parked`` or ``replay``) does not see them meanwhile and the
        order may change when one runs at the same time.
        """
        found: list[ParkedMessage] = []
        async with self._temporary_channel(publisher_confirms=False) as channel:
            last_tag: int | None = None
            try:
                while len(found) < limit:
                    message = await channel.basic_get(parking_queue_name(queue), no_ack=False)
                    if message.delivery_tag is None:
                        break
                    last_tag = message.delivery_tag
                    found.append(_parked_message(message))
                if last_tag is not None:
                    await channel.basic_nack(last_tag, multiple=True, requeue=True)
            except aiormq.ChannelNotFoundEntity:
                return []
        return found

    async def replay(self, queue: str, *, limit: int | None = None) -> int:
        """Move up to ``limit`` (default: all present now) parked messages back to ``queue``.

        Each is republished to ``queue`` with its attempts reset, confirmed, then removed from
        the parking queue; returns how many moved. Messages parked again during the replay are
        not replayed twice by the same call.
        """
        moved = 0
        async with self._temporary_channel(publisher_confirms=True) as channel:
            parking = parking_queue_name(queue)
            try:
                declared = await channel.queue_declare(parking, passive=True)
            except aiormq.ChannelNotFoundEntity:
                return 0
            present = declared.message_count or 0
            budget = present if limit is None else min(limit, present)
            while moved < budget:
                message = await channel.basic_get(parking, no_ack=False)
                tag = message.delivery_tag
                if tag is None:
                    break
                headers: FieldTable = {
                    **_public_headers(message.header.properties.headers or {}),
                    ROUTING_KEY: _parked_message(message).routing_key,
                }
                try:
                    async with asyncio.timeout(self._publish_timeout):
                        confirm = await channel.basic_publish(
                            message.body,
                            exchange="",
                            routing_key=queue,
                            properties=_copy_properties(message, headers),
                            mandatory=True,
                        )
                except TimeoutError as exc:
                    raise PublishTimeout(f"no confirm replaying to {queue!r}") from exc
                except _BROKER_ERRORS as exc:
                    raise PublishError(f"replaying to {queue!r} failed: {exc!r}") from exc
                if not isinstance(confirm, spec.Basic.Ack):
                    raise PublishError(f"the broker did not confirm a replay to {queue!r}")
                await channel.basic_ack(tag)
                moved += 1
        log.info("replayed %d parked messages to %s", moved, queue)
        return moved

    def _temporary_channel(self, *, publisher_confirms: bool) -> _TemporaryChannel:
        return _TemporaryChannel(self, publisher_confirms)

    async def _open_temporary(self, publisher_confirms: bool) -> AbstractChannel:
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._ready.wait()
                connection = self._connection
                if connection is None:
                    raise BusError("not connected to the broker")
                return await connection.channel(publisher_confirms=publisher_confirms)
        except TimeoutError as exc:
            raise BusError(f"no connection to the broker within {self._connect_timeout} s") from exc
        except _BROKER_ERRORS as exc:
            raise BusError(f"cannot open a channel: {exc!r}") from exc


class _TemporaryChannel:
    """``async with``: a short-lived channel; broker errors inside become ``BusError``."""

    def __init__(self, transport: AmqpTransport, publisher_confirms: bool) -> None:
        self._transport = transport
        self._publisher_confirms = publisher_confirms
        self._channel: AbstractChannel | None = None

    async def __aenter__(self) -> AbstractChannel:
        self._channel = await self._transport._open_temporary(self._publisher_confirms)
        return self._channel

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if self._channel is not None:
            # Closing returns any fetched, unacknowledged message to its queue.
            await self._transport._close_quietly(self._channel)
        if isinstance(exc, _BROKER_ERRORS) and not isinstance(exc, BusError):
            raise BusError(f"broker operation failed: {exc!r}") from exc


def _public_headers(headers: Mapping[str, Any]) -> FieldTable:
    """The publisher's headers: without the transport's and the broker's own."""
    return {
        key: value
        for key, value in headers.items()
        if key not in _OWN_HEADERS and not key.startswith(_BROKER_HEADER_PREFIXES)
    }


def _copy_properties(message: DeliveredMessage, headers: FieldTable) -> spec.Basic.Properties:
    """The properties of a re-published copy (never ``expiration`` nor ``user_id``)."""
    original = message.header.properties
    return spec.Basic.Properties(
        content_type=original.content_type or CONTENT_TYPE,
        content_encoding=original.content_encoding,
        headers=headers,
        delivery_mode=PERSISTENT,
        correlation_id=original.correlation_id,
        message_id=original.message_id,
        timestamp=original.timestamp,
        message_type=original.message_type,
        app_id=original.app_id,
    )


def _parked_message(message: DeliveredMessage) -> ParkedMessage:
    headers = message.header.properties.headers or {}
    attempts = headers.get(ATTEMPTS, 0)
    reason = headers.get(REASON, "")
    return ParkedMessage(
        body=message.body,
        routing_key=AmqpTransport._routing_key(message),
        message_id=message.header.properties.message_id,
        attempts=attempts if isinstance(attempts, int) else 0,
        reason=reason if isinstance(reason, str) else repr(reason),
        headers=dict(_public_headers(headers)),
    )

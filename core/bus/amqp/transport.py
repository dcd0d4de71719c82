"""``AmqpTransport``: RabbitMQ through aiormq, keeping the contract of ``core.bus.transport``.

Its parts, one job each: ``connection`` (the supervisor keeping one connection up),
``publisher`` (confirmed publishes), ``topology`` and ``consumer`` (durable queues, prefetch,
acks, the retry ladder), ``parking`` (parked messages and replay) and ``broadcast`` (private
queues of broadcast subscribers). This class wires them and orders start and stop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiormq.abc import AbstractChannel, AbstractConnection
from pamqp import commands as spec

from core.bus.amqp import parking, topology
from core.bus.amqp.broadcast import AmqpBroadcast
from core.bus.amqp.common import CONTENT_TYPE, PERSISTENT
from core.bus.amqp.connection import Link
from core.bus.amqp.consumer import Consumers
from core.bus.amqp.publisher import Publisher
from core.bus.amqp.topology import QueueType, Topology
from core.bus.matching import validate_pattern
from core.bus.transport import (
    BROADCAST_MAX_LENGTH,
    BroadcastSubscription,
    IncomingHandler,
    ParkedMessage,
    RetryPolicy,
    Transport,
    broadcast_queue_name,
)

__all__ = ["AmqpTransport"]


class AmqpTransport(Transport):
    """RabbitMQ transport: confirms, manual acks, prefetch, retry ladder, parking, broadcast
    subscriptions, reconnects.

    ``url`` is an AMQP URL (``amqp://user:password@host:5672/vhost``); aiormq reads options
    from its query string, e.g. ``?name=orders-1`` names the connection in the management UI
    and ``?heartbeat=30`` sets the heartbeat. ``reconnect_delays`` bound the waits between
    failed attempts of every reconnect loop: its first value is the ``core.retry.Backoff`` base,
    its last the cap (full jitter in between). ``connect_timeout`` bounds one attempt
    (connecting and restoring the topology); ``drain_timeout`` bounds how long ``stop`` waits
    for handlers in flight.
    """

    messaging_system = "rabbitmq"

    def __init__(
        self,
        url: str,
        *,
        exchange: str = Transport.exchange,
        publish_timeout: float = 5.0,
        reconnect_delays: Sequence[float] = (0.1, 0.5, 1, 2, 5),
        connect_timeout: float = 5.0,
        drain_timeout: float = 10.0,
        queue_type: QueueType = "classic",
        delivery_limit: int = 20,
    ) -> None:
        if not reconnect_delays:
            raise ValueError("reconnect_delays needs at least one delay")
        delays = [float(d) for d in reconnect_delays]
        self.exchange = exchange
        self._link = Link(
            url,
            exchange=exchange,
            connect_timeout=connect_timeout,
            backoff_base=delays[0],
            backoff_cap=max(delays),
            restore=self._restore,
        )
        self._topology = Topology(self._link, queue_type=queue_type, delivery_limit=delivery_limit)
        self._publisher = Publisher(self._link, publish_timeout=publish_timeout)
        self._consumers = Consumers(
            self._link, self._topology, self._publisher, drain_timeout=drain_timeout
        )
        self._broadcasts: list[AmqpBroadcast] = []

    @property
    def connected(self) -> bool:
        """Whether a connection is up and its topology restored (publishing can proceed)."""
        return self._link.connected

    def declared_queues(self) -> list[str]:
        """Every durable queue this transport declared (consumed, delay and parking queues):
        what a test deletes afterwards."""
        return self._topology.declared_queues()

    async def delete_topology(self, queues: Iterable[str], *, exchange: bool = False) -> None:
        """Delete ``queues`` and, with ``exchange=True``, this transport's exchange (cleaning
        up after a test; the transport must be started). Raises ``BusError``."""
        await topology.delete(self._link, queues, exchange=exchange)

    async def _restore(
        self, connection: AbstractConnection, channel: AbstractChannel
    ) -> AbstractChannel:
        return await self._topology.restore(connection, channel)

    def _forget(self, subscription: AmqpBroadcast) -> None:
        if subscription in self._broadcasts:
            self._broadcasts.remove(subscription)

    async def start(self) -> None:
        """Start the connection supervisor and wait for its first attempt (not for success).

        When the broker is unreachable this returns anyway: the supervisor keeps trying in the
        background, publishes wait for it up to ``publish_timeout`` and consumers start once it
        succeeds.
        """
        if self._link.running:
            return
        self._publisher.accepting = True
        self._consumers.start_all()
        for subscription in self._broadcasts:
            subscription.start()
        await self._link.start()

    async def stop_consuming(self) -> None:
        """Stop the broadcast subscriptions, cancel the consumers (``basic.cancel``: the broker
        sends this instance no more messages), let handlers in flight finish (bounded by
        ``drain_timeout``); publishing goes on."""
        broadcasts, self._broadcasts = self._broadcasts, []
        for subscription in broadcasts:
            await subscription.stop()
        await self._consumers.stop_all()

    async def stop(self) -> None:
        """Stop the broadcast subscriptions, cancel the consumers, let handlers in flight
        finish (bounded), disconnect."""
        if not self._link.running:
            return
        await self.stop_consuming()
        self._publisher.accepting = False
        await self._link.stop()

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
        await self._publisher.publish(self.exchange, routing_key, body, properties)

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
        await self._consumers.consume(queue, patterns, handler, prefetch=prefetch, retry=retry)

    async def broadcast(
        self,
        patterns: Sequence[str],
        handler: IncomingHandler,
        *,
        queue: str | None = None,
        max_length: int = BROADCAST_MAX_LENGTH,
    ) -> BroadcastSubscription:
        """Subscribe ``handler`` through an exclusive, auto-deleted queue of its own, bounded by
        ``max_length`` (oldest dropped first), consumed without acknowledgements.

        When connected, returns once the queue is consumed (within ``connect_timeout``);
        otherwise it attaches by itself once the connection is up.
        """
        if max_length < 1:
            raise ValueError("max_length must be at least 1")
        subscription = AmqpBroadcast(
            self._link,
            queue or broadcast_queue_name(self.exchange),
            tuple(validate_pattern(p) for p in patterns),
            handler,
            max_length=max_length,
            forget=self._forget,
        )
        self._broadcasts.append(subscription)
        if self._link.running:
            subscription.start()
            if self.connected:
                await subscription.wait_attached()
        return subscription

    async def parked(self, queue: str, *, limit: int = 100) -> list[ParkedMessage]:
        """Up to ``limit`` parked messages of ``queue``, oldest first, left in place."""
        return await parking.parked(self._link, queue, limit=limit)

    async def parked_count(self, queue: str) -> int | None:
        """How many messages ``queue``'s parking queue holds (a passive declare: no message is
        touched); ``BusError`` when the broker is away or the queue was never declared."""
        return await parking.count(self._link, queue)

    async def replay(self, queue: str, *, limit: int | None = None) -> int:
        """Move up to ``limit`` (default: all present now) parked messages back to ``queue``,
        with their attempts reset; return how many moved."""
        return await parking.replay(
            self._link, queue, limit=limit, publish_timeout=self._publisher.publish_timeout
        )

"""The durable queues of the AMQP transport, declared again on every connection.

For the topic exchange and every consumed queue ``Q``:

- ``Q``: durable, bound to the exchange with each pattern of its subscriptions;
- ``Q.retry.<ms>``: durable, one per delay of the retry ladder, with ``x-message-ttl`` = the delay
  and a dead-letter to the default exchange with routing key ``Q``: a message published there
  waits out the delay and flows back into ``Q``;
- ``Q.parked``: durable, where a message goes after its last attempt; ``parked`` reads it,
  ``replay`` moves it back to ``Q``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection
from pamqp.common import FieldTable

from core.bus.amqp.common import (
    BROKER_ERRORS,
    delay_queue_name,
    milliseconds,
    parking_queue_name,
)
from core.bus.amqp.connection import Link
from core.bus.transport import BusError

__all__ = ["QueueSpec", "Topology", "delete"]

log = logging.getLogger("core.bus.amqp")


@dataclass
class QueueSpec:
    """What a durable queue is bound to, and the delays of its retry ladder."""

    patterns: set[str] = field(default_factory=set)
    delays: set[float] = field(default_factory=set)


class Topology:
    """The known durable queues; ``restore`` declares them all on a fresh connection."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.queues: dict[str, QueueSpec] = {}

    def declared_queues(self) -> list[str]:
        """Every durable queue declared: consumed, delay and parking queues."""
        names: list[str] = []
        for queue, queue_spec in self.queues.items():
            names.append(queue)
            names += [delay_queue_name(queue, d) for d in sorted(queue_spec.delays)]
            names.append(parking_queue_name(queue))
        return names

    async def add(self, queue: str, patterns: Iterable[str], delays: Iterable[float]) -> None:
        """Add bindings and delays to ``queue``, declaring them now when connected (under the
        link's topology lock); ``BusError`` if the broker refuses them."""
        current = self.queues.get(queue, QueueSpec())
        wanted = QueueSpec(current.patterns | set(patterns), current.delays | set(delays))
        connection = self.link.connection
        if self.link.connected and connection is not None:
            await self._declare_now(connection, queue, wanted)
        self.queues[queue] = wanted

    async def restore(
        self, connection: AbstractConnection, channel: AbstractChannel
    ) -> AbstractChannel:
        """Declare every known queue on a fresh connection; a queue the broker refuses is
        logged and skipped (its channel error closes the channel, so a fresh one is returned)."""
        for queue, queue_spec in list(self.queues.items()):
            try:
                await self._declare(channel, queue, queue_spec)
            except aiormq.AMQPChannelError as exc:
                log.error("cannot restore the topology of queue %s: %r", queue, exc)
                channel = await connection.channel(publisher_confirms=True)
        return channel

    async def declare(self, channel: AbstractChannel, queue: str) -> None:
        """Declare ``queue``'s topology on ``channel`` (idempotent)."""
        await self._declare(channel, queue, self.queues[queue])

    async def declare_now(self, connection: AbstractConnection, queue: str) -> None:
        """Declare ``queue``'s topology on a channel of its own."""
        await self._declare_now(connection, queue, self.queues[queue])

    async def _declare(self, channel: AbstractChannel, queue: str, queue_spec: QueueSpec) -> None:
        await channel.queue_declare(queue, durable=True)
        for pattern in sorted(queue_spec.patterns):
            await channel.queue_bind(queue, self.link.exchange, routing_key=pattern)
        for delay in sorted(queue_spec.delays):
            arguments: FieldTable = {
                "x-message-ttl": milliseconds(delay),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
            }
            await channel.queue_declare(
                delay_queue_name(queue, delay), durable=True, arguments=arguments
            )
        await channel.queue_declare(parking_queue_name(queue), durable=True)

    async def _declare_now(
        self, connection: AbstractConnection, queue: str, queue_spec: QueueSpec
    ) -> None:
        try:
            async with asyncio.timeout(self.link.connect_timeout):
                channel = await connection.channel(publisher_confirms=False)
                try:
                    await self._declare(channel, queue, queue_spec)
                finally:
                    await self.link.close_quietly(channel)
        except aiormq.AMQPChannelError as exc:
            raise BusError(f"the broker refused the topology of queue {queue!r}: {exc!r}") from exc
        except (TimeoutError, *BROKER_ERRORS) as exc:
            # The connection is going away: the supervisor declares it on reconnecting.
            log.warning("declaring %s failed (%r); it is restored on reconnect", queue, exc)


async def delete(link: Link, queues: Iterable[str], *, exchange: bool) -> None:
    """Delete ``queues`` (absent ones are no error) and, with ``exchange``, the link's exchange."""
    channel = await link.open_channel(publisher_confirms=False)
    try:
        for queue in queues:
            await channel.queue_delete(queue)
        if exchange:
            await channel.exchange_delete(link.exchange)
    except BROKER_ERRORS as exc:
        raise BusError(f"deleting the topology failed: {exc!r}") from exc
    finally:
        await link.close_quietly(channel)

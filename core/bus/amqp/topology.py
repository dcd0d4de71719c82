"""The durable queues of the AMQP transport, declared again on every connection.

For the topic exchange and every consumed queue ``Q``:

- ``Q``: durable, bound to the exchange with each pattern of its subscriptions;
- ``Q.retry.<ms>``: durable, one per delay of the retry ladder, with ``x-message-ttl`` = the delay
  and a dead-letter to the default exchange with routing key ``Q``: a message published there
  waits out the delay and flows back into ``Q``;
- ``Q.parked``: durable, where a message goes after its last attempt; ``parked`` reads it,
  ``replay`` moves it back to ``Q``.

With ``queue_type="quorum"`` (``BUS_QUEUE_TYPE``) all three are quorum queues, replicated
across the broker's nodes (a classic queue lives on one). ``Q`` then has a delivery limit
(``BUS_DELIVERY_LIMIT``) and dead-letters into ``Q.parked``: the broker counts deliveries, so a
message whose handling kills its consumer every time (a crash, a lost connection: no nack ever
reaches the broker, and the local ``x-attempt`` counter never moves) is parked instead of
looping forever. The local counter still drives the retry ladder, since a quorum queue cannot
delay a requeue; the delay queues dead-letter back into ``Q`` at least once. A queue keeps the
type it was first declared with: switching an existing deployment means draining and deleting
its queues (the broker refuses a redeclaration with other arguments).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

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

__all__ = ["QueueSpec", "QueueType", "Topology", "delete"]

QueueType = Literal["classic", "quorum"]

log = logging.getLogger("core.bus.amqp")


@dataclass
class QueueSpec:
    """What a durable queue is bound to, and the delays of its retry ladder."""

    patterns: set[str] = field(default_factory=set)
    delays: set[float] = field(default_factory=set)


class Topology:
    """The known durable queues; ``restore`` declares them all on a fresh connection."""

    def __init__(
        self, link: Link, *, queue_type: QueueType = "classic", delivery_limit: int = 20
    ) -> None:
        if delivery_limit < 1:
            raise ValueError("the delivery limit is at least 1")
        self.link = link
        self.queue_type = queue_type
        self.delivery_limit = delivery_limit
        self.queues: dict[str, QueueSpec] = {}

    def _arguments(self, queue: str, kind: Literal["main", "delay", "parking"]) -> FieldTable:
        """The declaration arguments of ``queue`` by its ``kind``: none for classic queues."""
        if self.queue_type == "classic":
            return {}
        arguments: FieldTable = {"x-queue-type": "quorum"}
        if kind == "main":
            arguments.update(
                {
                    "x-delivery-limit": self.delivery_limit,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": parking_queue_name(queue),
                }
            )
        elif kind == "delay":
            # At-least-once dead-lettering (the default drops a message if the target is
            # unavailable at that moment); quorum queues require reject-publish overflow for it.
            arguments.update(
                {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
            )
        return arguments

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
        await channel.queue_declare(queue, durable=True, arguments=self._arguments(queue, "main"))
        for pattern in sorted(queue_spec.patterns):
            await channel.queue_bind(queue, self.link.exchange, routing_key=pattern)
        for delay in sorted(queue_spec.delays):
            name = delay_queue_name(queue, delay)
            arguments: FieldTable = {
                **self._arguments(name, "delay"),
                "x-message-ttl": milliseconds(delay),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
            }
            await channel.queue_declare(name, durable=True, arguments=arguments)
        parking = parking_queue_name(queue)
        await channel.queue_declare(
            parking, durable=True, arguments=self._arguments(parking, "parking")
        )

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

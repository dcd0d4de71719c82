"""Reading and replaying the parking queues of the AMQP transport, on short-lived channels."""

from __future__ import annotations

import asyncio
import logging

import aiormq
from aiormq.abc import AbstractChannel
from pamqp import commands as spec
from pamqp.common import FieldTable

from core.bus.amqp.common import (
    BROKER_ERRORS,
    ROUTING_KEY,
    copy_properties,
    parked_message,
    parking_queue_name,
    public_headers,
)
from core.bus.amqp.connection import Link
from core.bus.transport import BusError, ParkedMessage, PublishError, PublishTimeout

__all__ = ["count", "parked", "replay"]

log = logging.getLogger("core.bus.amqp")


async def count(link: Link, queue: str) -> int:
    """How many messages the parking queue of ``queue`` holds (a passive declare)."""
    async with _TemporaryChannel(link, publisher_confirms=False) as channel:
        declared = await channel.queue_declare(parking_queue_name(queue), passive=True)
        return int(declared.message_count or 0)


async def parked(link: Link, queue: str, *, limit: int) -> list[ParkedMessage]:
    """Up to ``limit`` parked messages of ``queue``, oldest first, left in place.

    The messages are fetched without acknowledgement and then returned to the queue with a
    requeueing nack; RabbitMQ puts them back at their positions, but a concurrent reader of the
    parking queue (another ``parked`` or ``replay``) does not see them meanwhile and the order
    may change when one runs at the same time.
    """
    found: list[ParkedMessage] = []
    async with _TemporaryChannel(link, publisher_confirms=False) as channel:
        last_tag: int | None = None
        try:
            while len(found) < limit:
                message = await channel.basic_get(parking_queue_name(queue), no_ack=False)
                if message.delivery_tag is None:
                    break
                last_tag = message.delivery_tag
                found.append(parked_message(message))
            if last_tag is not None:
                await channel.basic_nack(last_tag, multiple=True, requeue=True)
        except aiormq.ChannelNotFoundEntity:
            return []
    return found


async def replay(link: Link, queue: str, *, limit: int | None, publish_timeout: float) -> int:
    """Move up to ``limit`` (default: all present now) parked messages back to ``queue``.

    Each is republished to ``queue`` with its attempts reset, confirmed, then removed from the
    parking queue; returns how many moved. Messages parked again during the replay are not
    replayed twice by the same call.
    """
    moved = 0
    async with _TemporaryChannel(link, publisher_confirms=True) as channel:
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
                **public_headers(message.header.properties.headers or {}),
                ROUTING_KEY: parked_message(message).routing_key,
            }
            try:
                async with asyncio.timeout(publish_timeout):
                    confirm = await channel.basic_publish(
                        message.body,
                        exchange="",
                        routing_key=queue,
                        properties=copy_properties(message, headers),
                        mandatory=True,
                    )
            except TimeoutError as exc:
                raise PublishTimeout(f"no confirm replaying to {queue!r}") from exc
            except BROKER_ERRORS as exc:
                raise PublishError(f"replaying to {queue!r} failed: {exc!r}") from exc
            if not isinstance(confirm, spec.Basic.Ack):
                raise PublishError(f"the broker did not confirm a replay to {queue!r}")
            await channel.basic_ack(tag)
            moved += 1
    log.info("replayed %d parked messages to %s", moved, queue)
    return moved


class _TemporaryChannel:
    """``async with``: a short-lived channel; broker errors inside become ``BusError``."""

    def __init__(self, link: Link, publisher_confirms: bool) -> None:
        self._link = link
        self._publisher_confirms = publisher_confirms
        self._channel: AbstractChannel | None = None

    async def __aenter__(self) -> AbstractChannel:
        self._channel = await self._link.open_channel(publisher_confirms=self._publisher_confirms)
        return self._channel

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if self._channel is not None:
            # Closing returns any fetched, unacknowledged message to its queue.
            await self._link.close_quietly(self._channel)
        if isinstance(exc, BROKER_ERRORS) and not isinstance(exc, BusError):
            raise BusError(f"broker operation failed: {exc!r}") from exc

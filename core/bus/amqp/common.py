"""What the parts of the AMQP transport share: header names, queue names, broker errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Final

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from pamqp import commands as spec
from pamqp.common import FieldTable

from core.bus.transport import ParkedMessage

__all__ = [
    "ATTEMPT",
    "ATTEMPTS",
    "BROKER_ERRORS",
    "CONTENT_TYPE",
    "LAST_ERROR",
    "MAX_ERROR_TEXT",
    "PERSISTENT",
    "REASON",
    "ROUTING_KEY",
    "cancelled_by_caller",
    "close_quietly",
    "copy_properties",
    "delay_queue_name",
    "milliseconds",
    "parked_message",
    "parking_queue_name",
    "public_headers",
    "routing_key_of",
    "wait_closing",
]

log = logging.getLogger("core.bus.amqp")

CONTENT_TYPE: Final = "application/json"
PERSISTENT: Final = 2

ATTEMPT: Final = "x-attempt"
ROUTING_KEY: Final = "x-routing-key"
LAST_ERROR: Final = "x-last-error"
REASON: Final = "x-reason"
ATTEMPTS: Final = "x-attempts"
_OWN_HEADERS: Final = frozenset({ATTEMPT, ROUTING_KEY, LAST_ERROR, REASON, ATTEMPTS})
# Added by RabbitMQ when a delay queue dead-letters a message back, and by a quorum queue to
# count deliveries: not the publisher's.
_BROKER_HEADER_PREFIXES: Final = (
    "x-death",
    "x-first-death-",
    "x-last-death-",
    "x-delivery-count",
)
MAX_ERROR_TEXT: Final = 500

# What aiormq raises when the connection or channel is gone: its own errors, a closed channel
# (ChannelInvalidStateError is a RuntimeError, as is "connection closed" from channel()), and
# the socket's errors.
BROKER_ERRORS: Final = (aiormq.AMQPError, RuntimeError, ConnectionError, OSError, EOFError)


def delay_queue_name(queue: str, delay: float) -> str:
    """The delay queue of ``queue`` for a retry after ``delay`` seconds."""
    return f"{queue}.retry.{milliseconds(delay)}"


def parking_queue_name(queue: str) -> str:
    """The parking queue of ``queue``."""
    return f"{queue}.parked"


def milliseconds(seconds: float) -> int:
    """``seconds`` as whole milliseconds (never negative), as AMQP arguments take them."""
    return max(0, round(seconds * 1000))


def cancelled_by_caller() -> bool:
    """Whether a ``CancelledError`` is a real cancellation of the running task.

    aiormq rejects the futures of a closed connection with the close reason, which can be a
    ``CancelledError`` although nobody cancelled the waiting task.
    """
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


async def close_quietly(resource: AbstractConnection | AbstractChannel, *, within: float) -> None:
    """Close a connection or channel within ``within`` seconds; a broker that is gone is no
    error."""
    try:
        async with asyncio.timeout(within):
            await resource.close()
    except (TimeoutError, *BROKER_ERRORS) as exc:
        log.debug("closing %r failed: %r", resource, exc)
    except asyncio.CancelledError:
        if cancelled_by_caller():
            raise


async def wait_closing(
    resource: AbstractConnection | AbstractChannel, *others: asyncio.Future[Any]
) -> None:
    """Wait until ``resource`` closes (or one of the ``others`` futures is done).

    Only this observer of the ``closing`` future is cancelled afterwards: the owner closes the
    resource itself.
    """
    closing = resource.closing
    try:
        await asyncio.wait([closing, *others], return_when=asyncio.FIRST_COMPLETED)
    finally:
        closing.cancel()
        for other in others:
            other.cancel()


def routing_key_of(message: DeliveredMessage) -> str:
    """The routing key the message was first published with (kept across retries)."""
    original = (message.header.properties.headers or {}).get(ROUTING_KEY)
    return original if isinstance(original, str) else (message.routing_key or "")


def public_headers(headers: Mapping[str, Any]) -> FieldTable:
    """The publisher's headers: without the transport's and the broker's own."""
    return {
        key: value
        for key, value in headers.items()
        if key not in _OWN_HEADERS and not key.startswith(_BROKER_HEADER_PREFIXES)
    }


def copy_properties(message: DeliveredMessage, headers: FieldTable) -> spec.Basic.Properties:
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


def parked_message(message: DeliveredMessage) -> ParkedMessage:
    """A message read from a parking queue, as ``Transport.parked`` returns it."""
    headers = message.header.properties.headers or {}
    attempts = headers.get(ATTEMPTS, 0)
    reason = headers.get(REASON, "")
    return ParkedMessage(
        body=message.body,
        routing_key=routing_key_of(message),
        message_id=message.header.properties.message_id,
        attempts=attempts if isinstance(attempts, int) else 0,
        reason=reason if isinstance(reason, str) else repr(reason),
        headers=dict(public_headers(headers)),
    )

"""The contract every bus transport keeps (AMQP and in-memory alike).

A transport moves opaque bodies: ``publish`` returns only once the message is safely accepted
(a broker confirm, for AMQP) and raises otherwise, never hanging past its timeout. ``consume``
binds a durable queue to topic patterns and calls a handler per message, with at most
``prefetch`` in flight per consumer. The handler's outcome decides the message's fate:

- returns: acknowledged, gone;
- raises ``PermanentFailure`` (or the message cannot be parsed): parked at once;
- raises anything else: redelivered after the next delay of the ``RetryPolicy``; after the last
  attempt, parked. Parked messages stay inspectable (``parked``) and can be ``replay``-ed.

Broadcast subscriptions (``broadcast``) are the other kind: every subscribed instance gets its
own copy of each matching message, in a private queue that is bounded (the oldest is dropped
first), never acknowledged, retried or parked, and gone with its subscriber. A handler that
raises loses that message (logged). They are for telemetry and cache invalidation, not for work.

Subscriptions survive reconnects: a transport restores its topology and consumers by itself.
``start()`` does not raise when the broker is down: it keeps reconnecting in the background.
Meanwhile ``publish`` waits for the connection, within the transport's publish timeout
(``BUS_PUBLISH_TIMEOUT``, 5 s by default, confirm included): it succeeds if the connection is
back in time and raises ``PublishError`` otherwise; it never hangs. A message published after
``consume`` returns is routed to that queue.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BROADCAST_MAX_LENGTH",
    "BroadcastSubscription",
    "BusError",
    "Incoming",
    "IncomingHandler",
    "ParkedMessage",
    "PermanentFailure",
    "PublishError",
    "PublishTimeout",
    "RetryPolicy",
    "Transport",
    "broadcast_queue_name",
]

EXCHANGE = "aioshop.events"
BROADCAST_MAX_LENGTH = 10_000


def broadcast_queue_name(exchange: str) -> str:
    """A fresh name for a broadcast subscription's private queue on ``exchange``."""
    return f"{exchange}.broadcast.{uuid.uuid4().hex[:12]}"


class BusError(Exception):
    """Base of bus errors."""


class PublishError(BusError):
    """The broker refused the message or the connection is gone."""


class PublishTimeout(PublishError):
    """No confirm arrived within the publish timeout."""


class PermanentFailure(BusError):
    """Raised by a handler for a message that no retry can fix: it is parked at once."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delays (seconds) before each redelivery; after the last, the message is parked."""

    delays: tuple[float, ...] = (1.0, 5.0, 30.0)

    @property
    def max_attempts(self) -> int:
        """Deliveries before parking: the first one plus one per delay."""
        return len(self.delays) + 1

    def delay_for(self, attempt: int) -> float | None:
        """The delay after failed ``attempt`` (1-based), or ``None`` when it is time to park."""
        return self.delays[attempt - 1] if attempt <= len(self.delays) else None


@dataclass(frozen=True, slots=True)
class Incoming:
    """A delivered message."""

    body: bytes
    routing_key: str
    queue: str
    message_id: str | None = None
    attempt: int = 1
    headers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ParkedMessage:
    """A message that exhausted its retries (or could never succeed)."""

    body: bytes
    routing_key: str
    message_id: str | None
    attempts: int
    reason: str
    headers: Mapping[str, Any] = field(default_factory=dict)


IncomingHandler = Callable[[Incoming], Awaitable[None]]


class BroadcastSubscription(abc.ABC):
    """A live broadcast subscription: this instance's private copy of matching messages."""

    queue: str
    patterns: tuple[str, ...]

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether messages reach the handler right now (the private queue is consumed)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop receiving; the private queue goes away. Stopping twice is harmless."""


class Transport(abc.ABC):
    """Moves messages between services; see the module docstring for the contract."""

    exchange: str = EXCHANGE
    # ``messaging.system`` of the bus's spans (core.tracing).
    messaging_system: str = "aioshop"

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect (and keep reconnecting in the background)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop consuming, let in-flight handlers finish, disconnect."""

    async def stop_consuming(self) -> None:  # noqa: B027 - optional, not abstract
        """Take no more messages and let in-flight handlers finish, still connected (their
        publishes go out): the first step of a graceful stop. By default nothing: ``stop``
        does it all."""

    @abc.abstractmethod
    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish to the events exchange; return once confirmed, raise ``PublishError``."""

    @abc.abstractmethod
    async def consume(
        self,
        queue: str,
        patterns: Sequence[str],
        handler: IncomingHandler,
        *,
        prefetch: int = 32,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        """Bind ``queue`` to ``patterns`` and deliver its messages to ``handler``."""

    @abc.abstractmethod
    async def broadcast(
        self,
        patterns: Sequence[str],
        handler: IncomingHandler,
        *,
        queue: str | None = None,
        max_length: int = BROADCAST_MAX_LENGTH,
    ) -> BroadcastSubscription:
        """Give this instance a copy of every message matching ``patterns`` (see the module
        docstring); ``queue`` names the private queue (default: a fresh unique name).

        Returns once subscribed, or, while the broker is unreachable, after the first attempt:
        the subscription then attaches by itself when the connection comes back.
        """

    @abc.abstractmethod
    async def parked(self, queue: str, *, limit: int = 100) -> list[ParkedMessage]:
        """Up to ``limit`` parked messages of ``queue``, oldest first, left in place."""

    @abc.abstractmethod
    async def replay(self, queue: str, *, limit: int | None = None) -> int:
        """Move parked messages of ``queue`` back to it with fresh attempts; return how many."""

    async def parked_count(self, queue: str) -> int | None:
        """How many messages ``queue``'s parking queue holds, or ``None`` when this transport
        cannot tell cheaply (the default). Raises ``BusError`` when it cannot ask."""
        return None

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether the transport can publish right now."""

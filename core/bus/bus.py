"""The bus: ``publish(event)`` and ``subscribe(pattern, handler)`` over a transport.

Each service consumes from its own durable queue (named after the service unless a subscription
says otherwise) bound to the patterns of its subscriptions; several instances of a service share
that queue as competing consumers. A message matching several subscriptions of one queue goes to
each matching handler; a failure retries the message for all of them, so handlers must be
idempotent, which ``Inbox`` makes them.

Received envelopes are validated against the declared event class of their ``(type, version)``;
one that fails validation is parked at once, never looped. While a handler runs, the envelope's
correlation id is the context's, and events it publishes name the envelope as their cause.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError

from core.bus.events import Envelope, Event
from core.bus.matching import topic_matches, validate_pattern
from core.bus.metrics import BusMetrics
from core.bus.transport import Incoming, PermanentFailure, RetryPolicy, Transport
from core.context import causation_id, correlation_id

__all__ = ["Bus", "Handler", "Message", "Subscription"]

log = logging.getLogger("core.bus")


@dataclass(frozen=True, slots=True)
class Message:
    """What a handler receives: the envelope, its validated event, the delivery attempt."""

    envelope: Envelope
    event: Event | None
    attempt: int
    queue: str


Handler = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Subscription:
    """One handler bound to one pattern on one queue."""

    pattern: str
    handler: Handler
    queue: str
    events: tuple[type[Event], ...] = ()


@dataclass
class _QueueSpec:
    subscriptions: list[Subscription] = field(default_factory=list)
    prefetch: int = 32
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class Bus:
    """Publishes events and dispatches received ones to subscribed handlers."""

    def __init__(
        self,
        transport: Transport,
        *,
        source: str,
        metrics: BusMetrics | None = None,
    ) -> None:
        self.transport = transport
        self.source = source
        self.metrics = metrics or BusMetrics()
        self.publishes: set[type[Event]] = set()
        self._queues: dict[str, _QueueSpec] = defaultdict(_QueueSpec)
        self._started = False

    def declare_publishes(self, *events: type[Event]) -> None:
        """Record the event types this service publishes (for AsyncAPI)."""
        self.publishes.update(events)

    @property
    def subscriptions(self) -> list[Subscription]:
        """Every subscription, by queue."""
        return [s for spec in self._queues.values() for s in spec.subscriptions]

    def subscribe(
        self,
        pattern: str,
        handler: Handler,
        *,
        queue: str | None = None,
        events: Iterable[type[Event]] = (),
        prefetch: int = 32,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Call ``handler`` for every event whose type matches ``pattern`` (before ``start``).

        Subscriptions sharing a queue share its prefetch (the largest asked) and retry policy
        (asking for two different ones is an error).
        """
        if self._started:
            raise RuntimeError("subscribe before the bus starts")
        name = queue or self.source
        spec = self._queues[name]
        if retry is not None and spec.subscriptions and retry != spec.retry:
            raise ValueError(f"queue {name!r} already has another retry policy: {spec.retry}")
        spec.subscriptions.append(
            Subscription(validate_pattern(pattern), handler, name, tuple(events))
        )
        spec.prefetch = max(prefetch, spec.prefetch) if len(spec.subscriptions) > 1 else prefetch
        if retry is not None:
            spec.retry = retry

    async def start(self) -> None:
        """Connect the transport (publishing works from here) and start consuming."""
        await self.connect()
        await self.start_consuming()

    async def connect(self) -> None:
        """Connect the transport: publishing works from here, nothing is consumed yet."""
        await self.transport.start()

    async def start_consuming(self) -> None:
        """Start consuming every subscribed queue (after ``connect``; no subscribing after)."""
        for name, spec in self._queues.items():
            patterns = sorted({s.pattern for s in spec.subscriptions})
            await self.transport.consume(
                name,
                patterns,
                self._dispatcher(name, spec),
                prefetch=spec.prefetch,
                retry=spec.retry,
            )
        self._started = True

    async def stop(self) -> None:
        """Stop consuming and disconnect."""
        await self.transport.stop()

    def envelope(self, event: Event) -> Envelope:
        """Wrap ``event`` as this service's envelope (correlation and causation from context)."""
        return Envelope.wrap(event, source=self.source)

    async def publish(self, event: Event) -> Envelope:
        """Publish ``event`` now and wait for the broker's confirm.

        Prefer ``Outbox.publish`` for events caused by a database change: this one can succeed
        for a change that is later rolled back, or fail after the change committed.
        """
        envelope = self.envelope(event)
        await self.publish_envelope(envelope)
        return envelope

    async def publish_envelope(self, envelope: Envelope) -> None:
        """Publish an already built envelope (the outbox relay's path)."""
        start = time.perf_counter()
        await self.transport.publish(
            envelope.type,
            envelope.to_bytes(),
            message_id=str(envelope.id),
            headers={"x-source": envelope.source},
        )
        self.metrics.published(envelope.type, time.perf_counter() - start)

    def _dispatcher(self, queue: str, spec: _QueueSpec) -> Callable[[Incoming], Awaitable[None]]:
        async def dispatch(incoming: Incoming) -> None:
            try:
                envelope = Envelope.from_bytes(incoming.body)
                event = envelope.event()
            except (ValidationError, ValueError) as exc:
                self.metrics.parked(queue, incoming.routing_key)
                raise PermanentFailure(f"not a valid envelope: {exc}") from exc
            handlers = [s for s in spec.subscriptions if topic_matches(s.pattern, envelope.type)]
            message = Message(envelope, event, incoming.attempt, queue)
            correlation = correlation_id.set(envelope.correlation_id)
            causation = causation_id.set(str(envelope.id))
            start = time.perf_counter()
            try:
                for subscription in handlers:
                    await subscription.handler(message)
            except PermanentFailure:
                self.metrics.parked(queue, envelope.type)
                raise
            except Exception:
                if incoming.attempt >= spec.retry.max_attempts:
                    self.metrics.parked(queue, envelope.type)
                else:
                    self.metrics.retried(queue, envelope.type)
                log.warning(
                    "handler failed for %s %s (attempt %d)",
                    envelope.type,
                    envelope.id,
                    incoming.attempt,
                    exc_info=True,
                )
                raise
            finally:
                correlation_id.reset(correlation)
                causation_id.reset(causation)
            self.metrics.consumed(queue, envelope.type, time.perf_counter() - start)

        return dispatch

"""The bus: ``publish(event)``, ``consume(handler)`` and ``broadcast(handler)`` over a transport.

Each service consumes from its own durable queue (named after the service unless a subscription
says otherwise) bound to the types of the events it consumes; several instances of a service
share that queue as competing consumers. A message matching several handlers of one queue goes
to each of them; a failure retries the message for all of them, so handlers must be
idempotent, which an ``Inbox`` makes them.

Each bus has its own ``EventRegistry``: the classes it publishes (``declare_publishes``) and
consumes. Received envelopes are validated against the registered class of their
``(type, version)``; one that fails validation, or one whose version no typed handler of the
queue knows, is parked at once, never looped. While a handler runs, the envelope's correlation id
is the context's, and events it publishes name the envelope as their cause.

``broadcast`` is the other kind of subscription: every instance gets its own copy of each
matching event (``Transport.broadcast``); nothing is retried or parked.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import ValidationError

from core import tracing
from core.bus.consuming import (
    BroadcastHandler,
    Delivery,
    EventHandler,
    event_class_of,
    run_once,
)
from core.bus.events import Envelope, Event, EventRegistry
from core.bus.inbox import Inbox
from core.bus.matching import topic_matches, validate_pattern
from core.bus.metrics import BusMetrics
from core.bus.outbox import Outbox
from core.bus.transport import (
    BROADCAST_MAX_LENGTH,
    BroadcastSubscription,
    Incoming,
    PermanentFailure,
    RetryPolicy,
    Transport,
)
from core.context import causation_id, correlation_id

__all__ = ["BroadcastSpec", "Bus", "Handler", "Message", "Subscription"]

log = logging.getLogger("core.bus")

E = TypeVar("E", bound=Event)


@dataclass(frozen=True, slots=True)
class Message:
    """What a pattern handler receives: the envelope, its validated event, the attempt."""

    envelope: Envelope
    event: Event | None
    attempt: int
    queue: str


Handler = Callable[[Message], Awaitable[None]]
EnvelopeHandler = Callable[[Envelope], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Subscription:
    """One handler bound to one pattern on one queue.

    ``typed``: the handler takes only envelopes that resolve to one of ``events`` (a
    ``consume`` handler); otherwise it takes every envelope matching ``pattern``.
    """

    pattern: str
    handler: Handler
    queue: str
    events: tuple[type[Event], ...] = ()
    typed: bool = False


@dataclass(frozen=True, slots=True)
class BroadcastSpec:
    """A broadcast subscription of the bus, for its AsyncAPI document."""

    patterns: tuple[str, ...]
    events: tuple[type[Event], ...] = ()


@dataclass
class _QueueSpec:
    subscriptions: list[Subscription] = field(default_factory=list)
    prefetch: int = 32
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class Bus:
    """Publishes events and dispatches received ones to the handlers of this service."""

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
        self.registry = EventRegistry()
        self.outbox = Outbox(source)
        self.broadcasts: list[BroadcastSpec] = []
        self._queues: dict[str, _QueueSpec] = defaultdict(_QueueSpec)
        self._live: list[BroadcastSubscription] = []
        self._started = False
        self._headers: dict[str, dict[str, str]] = {}

    @property
    def publishes(self) -> tuple[type[Event], ...]:
        """The event classes this bus publishes (``declare_publishes``)."""
        return self.registry.published

    def declare_publishes(self, *events: type[Event]) -> None:
        """Register the event classes this service publishes (``EventConflict`` if another
        class has one's ``(type, version)`` on this bus)."""
        self.registry.register_all(events, "publishes")

    @property
    def subscriptions(self) -> list[Subscription]:
        """Every subscription, by queue."""
        return [s for spec in self._queues.values() for s in spec.subscriptions]

    def consume(
        self,
        handler: EventHandler[E],
        *,
        queue: str | None = None,
        inbox: Inbox | None = None,
        name: str | None = None,
        prefetch: int = 32,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Call ``handler(event, ctx)`` for every event of the class its first parameter is
        annotated with, from the durable ``queue`` (default: the service's), before ``start``.

        With ``inbox``, it runs once per event id, in a transaction of the inbox's database
        that records the id (``ctx.conn``); ``name`` (default: the event type) keys it in the
        inbox. An envelope of that type whose version no handler of the queue knows is parked.
        """
        event_cls = event_class_of(handler)
        self.registry.register(event_cls, "consumes")
        key = inbox.key(name or event_cls.event_type) if inbox is not None else ""
        outbox = self.outbox

        async def typed(message: Message) -> None:
            event = message.event
            if not isinstance(event, event_cls):  # the dispatcher routes by class: never
                raise PermanentFailure(f"{message.envelope.type} is not {event_cls.__name__}")
            delivery = Delivery(
                message.envelope, attempt=message.attempt, queue=message.queue, outbox=outbox
            )
            if inbox is not None:
                await run_once(handler, event, delivery, inbox=inbox, key=key)
                return
            await handler(event, delivery)
            if delivery._after_commit:
                await delivery.committed()

        typed.__name__ = getattr(handler, "__name__", typed.__name__)
        self._add(
            Subscription(
                event_cls.event_type, typed, queue or self.source, (event_cls,), typed=True
            ),
            prefetch,
            retry,
        )

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
        """Call ``handler(message)`` for every envelope whose type matches ``pattern``.

        The low-level form, for tools and tests that watch envelopes by pattern; a service
        consumes with ``consume``. ``message.event`` is the envelope resolved with this bus's
        registry, to which ``events`` are added (``None`` for a type the bus does not know).
        """
        events = tuple(events)
        self.registry.register_all(events, "consumes")
        self._add(
            Subscription(validate_pattern(pattern), handler, queue or self.source, events),
            prefetch,
            retry,
        )

    def _add(self, subscription: Subscription, prefetch: int, retry: RetryPolicy | None) -> None:
        """Subscriptions sharing a queue share its prefetch (the largest asked) and retry policy
        (asking for two different ones is an error)."""
        if self._started:
            raise RuntimeError("subscribe before the bus starts consuming")
        name = subscription.queue
        spec = self._queues[name]
        if retry is not None and spec.subscriptions and retry != spec.retry:
            raise ValueError(f"queue {name!r} already has another retry policy: {spec.retry}")
        spec.subscriptions.append(subscription)
        spec.prefetch = max(prefetch, spec.prefetch) if len(spec.subscriptions) > 1 else prefetch
        if retry is not None:
            spec.retry = retry

    async def broadcast(
        self,
        handler: BroadcastHandler[E],
        *,
        queue: str | None = None,
        max_length: int = BROADCAST_MAX_LENGTH,
    ) -> BroadcastSubscription:
        """Give this instance a copy of every event of the class ``handler``'s first
        parameter is annotated with: ``handler(event, envelope)``.

        Every instance gets each event (see ``Transport.broadcast``); one that does not
        validate is dropped and logged. Stopped with the bus (or by ``stop()`` on the result).
        """
        event_cls = event_class_of(handler)
        self.registry.register(event_cls, "consumes")
        registry = self.registry

        async def deliver(envelope: Envelope) -> None:
            try:
                event = registry.resolve(envelope)
            except ValidationError as exc:
                log.warning(
                    "dropping an invalid %s broadcast %s: %s", envelope.type, envelope.id, exc
                )
                return
            if isinstance(event, event_cls):
                await handler(event, envelope)
            else:
                log.warning("dropping %s v%d: unknown version", envelope.type, envelope.version)

        return await self._broadcast(
            (event_cls.event_type,), deliver, (event_cls,), queue, max_length, None, None
        )

    async def broadcast_envelopes(
        self,
        patterns: Sequence[str],
        handler: EnvelopeHandler,
        *,
        queue: str | None = None,
        max_length: int = BROADCAST_MAX_LENGTH,
        max_body: int | None = None,
        on_reject: Callable[[Incoming], object] | None = None,
    ) -> BroadcastSubscription:
        """Give this instance a copy of every envelope matching ``patterns``, unvalidated
        beyond the envelope itself (for observers such as a dashboard); a body that is not an
        envelope, or longer than ``max_body`` bytes, is dropped and passed to ``on_reject``."""
        return await self._broadcast(
            tuple(patterns), handler, (), queue, max_length, on_reject, max_body
        )

    async def _broadcast(
        self,
        patterns: tuple[str, ...],
        handler: EnvelopeHandler,
        events: tuple[type[Event], ...],
        queue: str | None,
        max_length: int,
        on_reject: Callable[[Incoming], object] | None,
        max_body: int | None,
    ) -> BroadcastSubscription:
        async def receive(incoming: Incoming) -> None:
            try:
                if max_body is not None and len(incoming.body) > max_body:
                    raise ValueError(f"a {len(incoming.body)}-byte body")
                envelope = Envelope.from_bytes(incoming.body)
            except ValueError:  # pydantic's ValidationError is one
                log.warning(
                    "broadcast %s: not an envelope on %.255s", incoming.queue, incoming.routing_key
                )
                if on_reject is not None:
                    on_reject(incoming)
                return
            correlation = correlation_id.set(envelope.correlation_id)
            causation = causation_id.set(str(envelope.id))
            try:
                await handler(envelope)
            finally:
                correlation_id.reset(correlation)
                causation_id.reset(causation)

        subscription = await self.transport.broadcast(
            patterns, receive, queue=queue, max_length=max_length
        )
        self.broadcasts.append(BroadcastSpec(patterns, events))
        self._live.append(subscription)
        return subscription

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

    async def stop_consuming(self) -> None:
        """Take no more messages (broadcast subscriptions end, consumers are cancelled) and let
        the handlers in flight finish; publishing still works (see ``stop`` to disconnect)."""
        live, self._live = self._live, []
        for subscription in live:
            await subscription.stop()
        await self.transport.stop_consuming()

    async def stop(self) -> None:
        """Stop the broadcast subscriptions, stop consuming and disconnect."""
        live, self._live = self._live, []
        for subscription in live:
            await subscription.stop()
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

    async def publish_envelope(
        self, envelope: Envelope, *, trace: Mapping[str, str] | None = None
    ) -> None:
        """Publish an already built envelope (the outbox relay's path; ``trace``: the trace
        context the outbox stored with its row, continued by a producer span whose
        ``traceparent`` travels in the message's headers; see ``core.tracing``)."""
        headers = self._headers.get(envelope.source)
        if headers is None:  # one per source (the bus's own, as a rule); transports copy it
            headers = self._headers[envelope.source] = {"x-source": envelope.source}
        start = time.perf_counter()
        if trace is None and not tracing.enabled():
            await self.transport.publish(
                envelope.type, envelope.to_bytes(), message_id=str(envelope.id), headers=headers
            )
        else:
            headers = dict(headers)
            message_id = str(envelope.id)
            with tracing.producer_span(
                envelope.type,
                message_id=message_id,
                source=envelope.source,
                system=self.transport.messaging_system,
                stored=trace,
                headers=headers,
            ):
                await self.transport.publish(
                    envelope.type, envelope.to_bytes(), message_id=message_id, headers=headers
                )
        self.metrics.published(envelope.type, time.perf_counter() - start)

    def _dispatcher(self, queue: str, spec: _QueueSpec) -> Callable[[Incoming], Awaitable[None]]:
        registry = self.registry
        metrics = self.metrics
        route = _Routes(spec.subscriptions)

        async def dispatch(incoming: Incoming) -> None:
            try:
                envelope = Envelope.from_bytes(incoming.body)
                event = registry.resolve(envelope)
            except (ValidationError, ValueError) as exc:
                metrics.parked(queue, incoming.routing_key)
                raise PermanentFailure(f"not a valid envelope: {exc}") from exc
            handlers = route(envelope.type, None if event is None else type(event))
            if handlers is None:
                metrics.parked(queue, envelope.type)
                raise PermanentFailure(
                    f"{envelope.type} v{envelope.version} is unknown to the handlers of {queue}"
                )
            message = Message(envelope, event, incoming.attempt, queue)
            correlation = correlation_id.set(envelope.correlation_id)
            causation = causation_id.set(str(envelope.id))
            span = tracing.consumer_span(
                envelope.type,
                message_id=str(envelope.id),
                source=self.source,
                system=self.transport.messaging_system,
                queue=queue,
                headers=incoming.headers,
            )
            start = time.perf_counter()
            try:
                with span:
                    for handler in handlers:
                        await handler(message)
            except PermanentFailure:
                metrics.parked(queue, envelope.type)
                raise
            except Exception:
                if incoming.attempt >= spec.retry.max_attempts:
                    metrics.parked(queue, envelope.type)
                else:
                    metrics.retried(queue, envelope.type)
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
            metrics.consumed(queue, envelope.type, time.perf_counter() - start)

        return dispatch


class _Routes:
    """The handlers of one queue for an envelope type and the class its event resolved to,
    worked out once per pair (the subscriptions are fixed once the queue is consumed).

    ``None`` when subscriptions match the type but none takes that class (an unknown version);
    the pairs kept are bounded, since the types come from the wire.
    """

    LIMIT = 1024

    def __init__(self, subscriptions: list[Subscription]) -> None:
        self._subscriptions = subscriptions
        self._known: dict[tuple[str, type[Event] | None], tuple[Handler, ...] | None] = {}
        self._count = len(subscriptions)

    def __call__(
        self, event_type: str, event_cls: type[Event] | None
    ) -> tuple[Handler, ...] | None:
        if self._count != len(self._subscriptions):  # one added while the queue was starting
            self._known.clear()
            self._count = len(self._subscriptions)
        key = (event_type, event_cls)
        try:
            return self._known[key]
        except KeyError:
            pass
        matching = [s for s in self._subscriptions if topic_matches(s.pattern, event_type)]
        handlers = [s.handler for s in matching if not s.typed or event_cls in s.events]
        found = tuple(handlers) if handlers or not matching else None
        if len(self._known) < self.LIMIT:
            self._known[key] = found
        return found

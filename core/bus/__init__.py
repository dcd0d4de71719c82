"""The message bus: events in envelopes over AMQP (aiormq) or in memory, outbox and inbox.

See ``transport.py`` for the delivery contract, ``bus.py`` for publishing, consuming and
broadcasting, ``consuming.py`` for typed handlers, ``outbox.py``, ``relay.py`` and ``inbox.py``
for effectively-once processing across a database and the broker.
"""

from core.bus.app import (
    BUS,
    BUS_COMPANIONS,
    OUTBOX,
    OUTBOX_RELAY,
    BusCompanion,
    bus_ctx,
    bus_workers_ctx,
    make_transport,
)
from core.bus.asyncapi import build_asyncapi
from core.bus.bus import BroadcastSpec, Bus, Handler, Message, Subscription
from core.bus.consuming import BroadcastHandler, Delivery, EventHandler, event_class_of
from core.bus.events import Envelope, Event, EventConflict, EventRegistry
from core.bus.inbox import Inbox
from core.bus.matching import topic_matches
from core.bus.memory import InMemoryTransport
from core.bus.metrics import BusMetrics
from core.bus.outbox import Outbox
from core.bus.relay import OutboxRelay
from core.bus.transport import (
    BroadcastSubscription,
    Incoming,
    ParkedMessage,
    PermanentFailure,
    PublishError,
    PublishTimeout,
    RetryPolicy,
    Transport,
)

__all__ = [
    "BUS",
    "BUS_COMPANIONS",
    "OUTBOX",
    "OUTBOX_RELAY",
    "BroadcastHandler",
    "BroadcastSpec",
    "BroadcastSubscription",
    "Bus",
    "BusCompanion",
    "BusMetrics",
    "Delivery",
    "Envelope",
    "Event",
    "EventConflict",
    "EventHandler",
    "EventRegistry",
    "Handler",
    "InMemoryTransport",
    "Inbox",
    "Incoming",
    "Message",
    "Outbox",
    "OutboxRelay",
    "ParkedMessage",
    "PermanentFailure",
    "PublishError",
    "PublishTimeout",
    "RetryPolicy",
    "Subscription",
    "Transport",
    "build_asyncapi",
    "bus_ctx",
    "bus_workers_ctx",
    "event_class_of",
    "make_transport",
    "topic_matches",
]

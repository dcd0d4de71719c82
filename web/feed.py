"""Where the dashboard's events come from: a broadcast subscription of its own per instance.

Every dashboard must see every event (two dashboards are two audiences, not competing
consumers), and a dashboard that goes away must leave nothing behind: that is ``core.bus``'s
broadcast subscription (over RabbitMQ an exclusive, auto-deleted, bounded queue consumed without
acknowledgements; in memory a private buffer), which reconnects by itself.

A body that is not an envelope (or larger than ``max_body``) is dropped and reported to
``on_reject``; the envelope's content is validated by the sink (``DashboardState.apply``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from core.bus import BroadcastSubscription, Bus, Envelope, Incoming

__all__ = ["FEED_PATTERNS", "MAX_BODY", "open_feed"]

log = logging.getLogger("web.feed")

FEED_PATTERNS = (
    "metrics.snapshot",
    "order.*",
    "inventory.*",
    "payment.*",
    "user.registered",
    "product.*",
)
MAX_BODY = 1024 * 1024

Sink = Callable[[Envelope], object]


async def open_feed(
    bus: Bus,
    queue: str,
    sink: Sink,
    *,
    patterns: Sequence[str] = FEED_PATTERNS,
    max_length: int = 10_000,
    max_body: int = MAX_BODY,
    on_reject: Callable[[], object] | None = None,
) -> BroadcastSubscription:
    """Feed ``sink`` every envelope matching ``patterns`` through a broadcast subscription of
    ``bus`` on the private queue ``queue``; stop it with ``stop()`` (the bus's stop does too)."""

    def reject(incoming: Incoming) -> None:
        if on_reject is not None:
            on_reject()

    async def take(envelope: Envelope) -> None:
        try:
            sink(envelope)
        except Exception:  # a dashboard bug must not stop the feed
            log.exception("the dashboard could not take %s", envelope.type)

    return await bus.broadcast_envelopes(
        patterns,
        take,
        queue=queue,
        max_length=max_length,
        max_body=max_body,
        on_reject=reject,
    )

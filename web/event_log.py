"""The dashboard's list of recent events: one short, public-safe record per event received.

The dashboard is public (behind the gateway too): a record's summary shows no full names and
masks e-mail addresses; its public form also leaves out event, order and correlation ids.
"""

from __future__ import annotations

from typing import Any

from core.bus import Envelope
from web.values import iso

__all__ = ["event_record", "event_view", "mask_email", "summary"]

# The payload fields a summary shows, in this order.
_SUMMARY_FIELDS = (
    "email",
    "name",
    "sku",
    "order_id",
    "product_id",
    "status",
    "reason",
    "total_cents",
    "amount_cents",
    "currency",
    "available",
)


def event_record(envelope: Envelope) -> dict[str, Any]:
    """What the dashboard keeps of one (validated) event: both its full and public summaries."""
    return {
        "id": str(envelope.id),
        "type": envelope.type,
        "source": envelope.source,
        "at": iso(envelope.occurred_at),
        "correlation_id": envelope.correlation_id,
        "summary": summary(envelope.data),
        "public_summary": summary(envelope.data, public=True),
    }


def event_view(event: dict[str, Any], full: bool) -> dict[str, Any]:
    """A record (``event_record``) as the view shows it; without ids unless ``full``."""
    if full:
        return {k: v for k, v in event.items() if k != "public_summary"}
    return {
        "id": None,
        "type": event["type"],
        "source": event["source"],
        "at": event["at"],
        "correlation_id": None,
        "summary": event["public_summary"],
    }


def mask_email(address: str) -> str:
    """``alice@example.com`` -> ``a***@example.com``."""
    local, at, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}" if at and local else "***"


def summary(data: dict[str, Any], *, public: bool = False) -> str:
    """A short text of an event's payload (rendered escaped, like every value); ``public``:
    without the order id."""
    parts = []
    for name in _SUMMARY_FIELDS:
        if public and name == "order_id":
            continue
        value = data.get(name)
        if value is None or isinstance(value, dict | list):
            continue
        text = str(value)
        if name.endswith("_id") and len(text) > 8:
            text = text[:8]
        if name == "email":
            text = mask_email(text)
        parts.append(f"{name}={text}")
    return " ".join(parts)[:200]

"""AsyncAPI 3.0 document of what a service publishes and consumes, from its bus's registry."""

from __future__ import annotations

import re
from typing import Any

from pydantic import TypeAdapter

from core.bus.bus import Bus
from core.bus.events import Envelope, Event
from core.bus.matching import topic_matches

__all__ = ["build_asyncapi"]

_REF = "#/components/schemas/{model}"


def _id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "all"


def build_asyncapi(bus: Bus, *, title: str, version: str = "1.0.0") -> dict[str, Any]:
    """The AsyncAPI document of ``bus``'s publications, subscriptions and broadcasts.

    A pattern subscription without event classes lists the classes of the bus's registry that
    its pattern matches.
    """
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    exchange = {"name": bus.transport.exchange, "type": "topic", "durable": True, "vhost": "/"}

    def message(event_cls: type[Event]) -> str:
        name = f"{event_cls.__name__}V{event_cls.event_version}"
        if name not in messages:
            data = TypeAdapter(event_cls).json_schema(ref_template=_REF)
            schemas.update(data.pop("$defs", {}))
            schemas[event_cls.__name__] = data
            envelope = Envelope.model_json_schema()
            envelope.pop("title", None)
            envelope["properties"]["type"] = {"const": event_cls.event_type}
            envelope["properties"]["version"] = {"const": event_cls.event_version}
            envelope["properties"]["data"] = {"$ref": _REF.format(model=event_cls.__name__)}
            messages[name] = {
                "name": event_cls.event_type,
                "title": event_cls.__name__,
                "summary": (event_cls.__doc__ or "").strip().splitlines()[0]
                if event_cls.__doc__
                else "",
                "contentType": "application/json",
                "payload": envelope,
            }
        return name

    def channel(address: str, events: list[type[Event]]) -> str:
        channel_id = _id(address)
        entry = channels.setdefault(
            channel_id,
            {
                "address": address,
                "messages": {},
                "bindings": {"amqp": {"is": "routingKey", "exchange": exchange}},
            },
        )
        for event_cls in events:
            name = message(event_cls)
            entry["messages"][name] = {"$ref": f"#/components/messages/{name}"}
        return channel_id

    for event_cls in sorted(bus.publishes, key=lambda e: e.event_type):
        channel_id = channel(event_cls.event_type, [event_cls])
        operations[f"publish_{channel_id}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [
                {"$ref": f"#/channels/{channel_id}/messages/{m}"}
                for m in channels[channel_id]["messages"]
            ],
        }
    known = sorted(bus.registry, key=lambda e: e.key())

    def matching(pattern: str, events: tuple[type[Event], ...]) -> list[type[Event]]:
        return list(events) or [e for e in known if topic_matches(pattern, e.event_type)]

    for sub in bus.subscriptions:
        channel_id = channel(sub.pattern, matching(sub.pattern, sub.events))
        operations[f"consume_{_id(sub.queue)}_{channel_id}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [
                {"$ref": f"#/channels/{channel_id}/messages/{m}"}
                for m in channels[channel_id]["messages"]
            ],
            "bindings": {"amqp": {"ack": True}},
            "description": f"consumed from queue {sub.queue}",
        }
    for broadcast in bus.broadcasts:
        for pattern in broadcast.patterns:
            channel_id = channel(pattern, matching(pattern, broadcast.events))
            operations[f"broadcast_{channel_id}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "messages": [
                    {"$ref": f"#/channels/{channel_id}/messages/{m}"}
                    for m in channels[channel_id]["messages"]
                ],
                "bindings": {"amqp": {"ack": False}},
                "description": "every instance receives its own copy (an exclusive queue)",
            }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": title, "version": version},
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }

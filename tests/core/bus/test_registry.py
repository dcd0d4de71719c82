"""Each bus has its own registry of event classes; a conflict is refused at registration."""

from __future__ import annotations

import pytest

from core.bus import (
    Bus,
    Delivery,
    Envelope,
    Event,
    EventConflict,
    EventRegistry,
    InMemoryTransport,
    build_asyncapi,
    event_class_of,
)

pytestmark = pytest.mark.unit


class PingV1(Event):
    """``test.ping`` as one service declares it."""

    event_type = "test.ping"

    n: int


class PingAgain(Event):
    """Another declaration of ``test.ping`` v1: a wiring mistake."""

    event_type = "test.ping"

    text: str


class PingV2(Event):
    """``test.ping`` v2."""

    event_type = "test.ping"
    event_version = 2

    n: int
    label: str


def test_a_second_class_for_one_type_and_version_is_refused() -> None:
    registry = EventRegistry()
    registry.register(PingV1, "publishes")
    registry.register(PingV1, "consumes")  # the same class again: fine
    registry.register(PingV2, "consumes")  # another version: fine
    with pytest.raises(EventConflict, match=r"test\.ping v1"):
        registry.register(PingAgain, "consumes")
    assert registry.get("test.ping", 1) is PingV1
    assert registry.published == (PingV1,)
    assert registry.consumed == (PingV1, PingV2)


def test_a_bus_refuses_a_conflicting_consumer_when_it_is_declared() -> None:
    bus = Bus(InMemoryTransport(), source="t")
    bus.declare_publishes(PingV1)

    async def on_ping(event: PingAgain, ctx: Delivery) -> None:
        raise AssertionError("never wired")

    with pytest.raises(EventConflict):
        bus.consume(on_ping)


def test_envelopes_resolve_through_the_registry_of_their_bus() -> None:
    first, second = EventRegistry(), EventRegistry()
    first.register(PingV1, "consumes")
    second.register(PingAgain, "consumes")
    envelope = Envelope(type="test.ping", source="t", data={"n": 3})
    assert envelope.event(first) == PingV1(n=3)
    assert Envelope(type="test.ping", source="t", data={"text": "x"}).event(second) == PingAgain(
        text="x"
    )
    assert Envelope(type="test.ping", version=2, source="t", data={}).event(first) is None


def test_the_event_class_is_read_from_the_annotation() -> None:
    async def typed(event: PingV2, ctx: Delivery) -> None: ...

    async def untyped(event, ctx):  # type: ignore[no-untyped-def]
        ...

    async def not_an_event(event: int, ctx: Delivery) -> None: ...

    assert event_class_of(typed) is PingV2
    with pytest.raises(TypeError, match="annotate"):
        event_class_of(untyped)
    with pytest.raises(TypeError, match="annotate"):
        event_class_of(not_an_event)  # type: ignore[arg-type]


def test_asyncapi_comes_from_the_registry() -> None:
    bus = Bus(InMemoryTransport(), source="t")
    bus.declare_publishes(PingV1)

    async def on_ping(event: PingV2, ctx: Delivery) -> None: ...

    bus.consume(on_ping, queue="pings")
    document = build_asyncapi(bus, title="t")
    assert set(document["components"]["messages"]) == {"PingV1V1", "PingV2V2"}
    actions = sorted(op["action"] for op in document["operations"].values())
    assert actions == ["receive", "send"]

"""The envelope's wire form and ids, and the bus metrics as a scrape shows them."""

from __future__ import annotations

import copy
import enum
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

from core.bus import BusMetrics, Envelope, Event
from core.bus.events import new_event_id
from core.context import causation_id, correlation_id


class Sample(Event):
    """A test event."""

    event_type = "sample.made"

    name: str
    weight: float


class Colour(enum.Enum):
    RED = "red"


def model_dump_bytes(envelope: Envelope) -> bytes:
    """The wire form as it was first written: orjson over ``model_dump(mode="json")``."""
    return orjson.dumps(envelope.model_dump(mode="json"))


@pytest.mark.parametrize(
    "data",
    [
        {"x": 1.5, "tiny": 5e-324, "big": 1e16, "third": 0.1 + 0.2, "n": 2**63 - 1},
        {"text": 'é\u2028"\\\x00', "none": None, "flag": True, "nested": [1, {"a": [2.0]}]},
        {"when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-3)))},
        {"id": uuid.UUID(int=7), "colour": Colour.RED, "pair": (1, 2)},
        # Not native to orjson: the long way, with pydantic's rendering.
        {"price": Decimal("1.10"), "tags": {"a"}, "raw": b"x", "by_int": {1: 2}},
    ],
)
@pytest.mark.parametrize(
    "occurred_at",
    [
        datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC),
        datetime(2026, 5, 6, 7, 8, 9, 120, tzinfo=UTC),
        datetime(2026, 5, 6, 7, 8, 9, 999999, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 5, 6, 7, 8, 9, 1),
    ],
)
def test_the_wire_form_is_byte_for_byte_the_model_dump_one(
    data: dict[str, Any], occurred_at: datetime
) -> None:
    envelope = Envelope(
        type="sample.made", source="tests", correlation_id="c-1", data=data, occurred_at=occurred_at
    )
    assert envelope.to_bytes() == model_dump_bytes(envelope)


def test_a_wrapped_event_is_validated_and_read_back_equal() -> None:
    token = correlation_id.set("req-7")
    cause = causation_id.set("cause-1")
    try:
        envelope = Envelope.wrap(Sample(name="a", weight=0.25), source="tests")
    finally:
        correlation_id.reset(token)
        causation_id.reset(cause)
    assert (envelope.correlation_id, envelope.causation_id) == ("req-7", "cause-1")
    assert envelope.model_fields_set == {
        "type",
        "version",
        "correlation_id",
        "causation_id",
        "source",
        "data",
    }
    body = envelope.to_bytes()
    assert body == model_dump_bytes(envelope)
    assert Envelope.from_bytes(body) == envelope
    with pytest.raises(ValidationError):
        Envelope.wrap(Sample(name="a", weight=1), source=None)  # type: ignore[arg-type]


def test_event_ids_are_random_version_4_uuids() -> None:
    ids = [new_event_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for event_id in ids[:100]:
        assert (event_id.version, event_id.variant) == (4, uuid.RFC_4122)
        assert uuid.UUID(str(event_id)) == event_id
        assert copy.deepcopy(event_id) == event_id  # its state, is_safe included, is whole
    assert Envelope(type="t", source="s", data={}).id.version == 4


def scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_metrics_counted_per_message_show_in_the_scrape() -> None:
    registry = CollectorRegistry(auto_describe=False)
    metrics = BusMetrics(registry)
    for seconds in (0.0005, 0.002, 20.0):
        metrics.published("sample.made", seconds)
    metrics.consumed("q", "sample.made", 0.003)
    metrics.parked("q", "other")
    text = scrape(registry)
    assert 'bus_published_total{type="sample.made"} 3.0' in text
    assert 'bus_publish_duration_seconds_bucket{le="0.001"} 1.0' in text
    assert 'bus_publish_duration_seconds_bucket{le="0.0025"} 2.0' in text
    assert 'bus_publish_duration_seconds_bucket{le="+Inf"} 3.0' in text
    assert "bus_publish_duration_seconds_sum 20.0025" in text
    assert 'bus_consumed_total{queue="q",type="sample.made"} 1.0' in text
    assert 'bus_handler_duration_seconds_count{queue="q"} 1.0' in text
    assert 'bus_parked_total{queue="q",type="other"} 1.0' in text
    assert "bus_outbox_pending 0.0" in text
    metrics.published("sample.made", 0.001)
    assert 'bus_published_total{type="sample.made"} 4.0' in scrape(registry)
    assert metrics.totals == {"published": 4, "consumed": 1, "retried": 0, "parked": 1}
    with pytest.raises(ValueError, match="Duplicated"):
        BusMetrics(registry)

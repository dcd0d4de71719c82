"""The dashboard's state: instances from snapshots, health from silence, sagas from events."""

from __future__ import annotations

import uuid

from tests.web.conftest import envelope, snapshot_data
from web.state import POINT_FIELDS, DashboardState, StateLimits


def test_a_snapshot_makes_an_instance_with_its_figures_and_a_chart_point() -> None:
    state = DashboardState()
    assert state.apply(envelope("metrics.snapshot", snapshot_data()), now=100.0)
    view = state.view(now=100.5, full=True)
    (service,) = view["services"]
    (instance,) = service["instances"]
    assert instance["key"] == "users/host:1:abc"
    assert instance["health"] == "up"
    assert (instance["rps"], instance["p50_ms"], instance["p95_ms"], instance["p99_ms"]) == (
        50.0,
        3.0,
        9.0,
        20.0,
    )
    assert instance["error_ratio"] == 0.1
    assert instance["cache"]["memory"]["ratio"] == 0.9
    assert instance["bus"]["outbox_pending"] == 2
    assert view["totals"]["rps"] == 50.0
    assert view["totals"]["errors_per_s"] == 5.0
    history = state.history(full=True)
    point = dict(zip(POINT_FIELDS, history["users/host:1:abc"]["points"][0], strict=True))
    assert point["rps"] == 50.0
    assert point["rss_mb"] == 50.0
    assert point["errors_per_s"] == 5.0
    assert point["bus_per_s"] is None  # needs two snapshots


def test_history_since_a_cursor_has_only_the_new_points() -> None:
    state = DashboardState()
    state.apply(envelope("metrics.snapshot", snapshot_data()), now=1.0)
    cursor = state.cursor()
    assert state.history(since=cursor, full=True) == {}
    bus = {**snapshot_data()["bus"], "published": 30, "consumed": 15}
    state.apply(envelope("metrics.snapshot", snapshot_data(bus=bus)), now=2.0)
    state.apply(envelope("metrics.snapshot", snapshot_data(service="products")), now=2.0)
    delta = state.history(since=cursor, full=True)
    assert len(delta["users/host:1:abc"]["points"]) == 1
    assert delta["users/host:1:abc"]["points"][0][POINT_FIELDS.index("bus_per_s")] == 30.0
    assert len(delta["products/host:1:abc"]["points"]) == 1  # a new instance: all its points


def test_health_goes_from_up_to_degraded_to_down_with_silence() -> None:
    state = DashboardState(StateLimits(stale_after=3, down_after=10, retention=60))
    state.apply(envelope("metrics.snapshot", snapshot_data()), now=0.0)

    def health(now: float) -> str:
        return str(state.view(now=now, full=True)["services"][0]["instances"][0]["health"])

    assert health(1.0) == "up"
    assert health(5.0) == "degraded"
    assert health(11.0) == "down"
    assert state.view(now=11.0, full=True)["totals"]["instances"] == {
        "up": 0,
        "degraded": 0,
        "down": 1,
    }
    state.apply(envelope("metrics.snapshot", snapshot_data()), now=12.0)
    assert health(12.5) == "up"
    state.prune(now=100.0)
    assert state.view(now=100.0, full=True)["services"] == []


def test_failing_or_disconnected_instances_are_degraded() -> None:
    state = DashboardState(StateLimits(error_ratio=0.05))
    failing = {"server": 10, "client": 0, "server_rate": 10.0, "client_rate": 0.0, "ratio": 0.2}
    state.apply(envelope("metrics.snapshot", snapshot_data(errors=failing)), now=0.0)
    cut_off = {**snapshot_data()["bus"], "connected": False}
    state.apply(envelope("metrics.snapshot", snapshot_data(instance="b", bus=cut_off)), now=0.0)
    state.apply(envelope("metrics.snapshot", snapshot_data(instance="c")), now=0.0)
    instances = state.view(now=0.1, full=True)["services"][0]["instances"]
    healths = {i["instance"]: (i["health"], i["health_reasons"]) for i in instances}
    assert healths == {
        "host:1:abc": ("degraded", ["20% of responses are 5xx"]),
        "b": ("degraded", ["bus disconnected"]),
        "c": ("up", []),
    }


def _saga_events(order_id: str, correlation: str) -> list[tuple[str, dict[str, object]]]:
    return [
        ("order.placed", {"order_id": order_id, "total_cents": 2500, "currency": "EUR"}),
        ("inventory.reserved", {"order_id": order_id, "items": []}),
        ("payment.declined", {"order_id": order_id, "reason": "payment_declined"}),
        ("inventory.released", {"order_id": order_id, "items": []}),
        ("order.rejected", {"order_id": order_id, "reason": "payment_declined"}),
    ]


def test_a_saga_collects_its_steps_and_compensations_once_each() -> None:
    state = DashboardState()
    order_id, correlation = str(uuid.uuid4()), "corr-1"
    envelopes = [
        envelope(kind, data, correlation_id=correlation)
        for kind, data in _saga_events(order_id, correlation)
    ]
    for item in envelopes:
        assert state.apply(item, now=1.0)
    assert not state.apply(envelopes[1], now=1.0)  # redelivered: ignored
    (saga,) = state.view(full=True)["sagas"]
    assert saga["order_id"] == order_id
    assert saga["correlation_id"] == correlation
    assert saga["status"] == "rejected"
    assert saga["reason"] == "payment_declined"
    assert [(s["label"], s["kind"]) for s in saga["steps"]] == [
        ("placed", "ok"),
        ("reserved", "ok"),
        ("payment declined", "fail"),
        ("released", "compensate"),
        ("rejected", "fail"),
    ]
    business = state.view(full=True)["business"]
    assert business["orders_by_status"] == {"rejected": 1}
    assert business["revenue_cents"] == {}


def test_events_without_an_order_id_join_their_saga_by_correlation_id() -> None:
    state = DashboardState()
    order_id = str(uuid.uuid4())
    state.apply(
        envelope("order.placed", {"order_id": order_id, "total_cents": 999}, correlation_id="c")
    )
    state.apply(envelope("payment.authorized", {"amount_cents": 999}, correlation_id="c"))
    state.apply(envelope("order.confirmed", {"order_id": order_id}, correlation_id="c"))
    (saga,) = state.view(full=True)["sagas"]
    assert [s["label"] for s in saga["steps"]] == ["placed", "authorized", "confirmed"]
    assert state.view(full=True)["business"]["revenue_cents"] == {"USD": 999}
    assert state.view(full=True)["business"]["orders_by_status"] == {"confirmed": 1}


def test_only_the_last_orders_are_kept() -> None:
    state = DashboardState(StateLimits(orders=3))
    ids = [str(uuid.uuid4()) for _ in range(5)]
    for order_id in ids:
        state.apply(envelope("order.placed", {"order_id": order_id}))
    assert [s["order_id"] for s in state.view(full=True)["sagas"]] == ids[:1:-1]
    assert sum(state.view(full=True)["business"]["orders_by_status"].values()) == 5


def test_business_figures_of_services_win_over_counted_events() -> None:
    state = DashboardState()
    state.apply(envelope("user.registered", {"email": "a@example.com"}))
    state.apply(envelope("order.placed", {"order_id": str(uuid.uuid4()), "total_cents": 5}))
    business = state.view(full=True)["business"]
    assert (business["registrations"], business["registrations_total"]) == (1, None)
    assert business["orders_source"] == "events"
    figures = {
        "registrations": 42,
        "orders_by_status": {"confirmed": 7, "pending": 1},
        "revenue_cents": {"USD": 12_345},
    }
    state.apply(envelope("metrics.snapshot", snapshot_data(service="orders", business=figures)))
    business = state.view(full=True)["business"]
    assert business["registrations_total"] == 42
    assert business["orders_by_status"] == {"confirmed": 7, "pending": 1}
    assert business["revenue_cents"] == {"USD": 12_345}
    assert business["orders_source"] == "figures"
    assert business["services"]["orders"] == figures


def test_recent_events_keep_values_as_given_for_the_page_to_escape() -> None:
    state = DashboardState(StateLimits(events=2))
    for n in range(3):
        state.apply(envelope("product.created", {"sku": f"S-{n}", "name": "<b>x</b>"}))
    events = state.view(full=True)["events"]
    assert len(events) == 2
    assert events[0]["summary"] == "name=<b>x</b> sku=S-2"


def test_the_public_page_shows_no_names_and_masks_email_addresses() -> None:
    state = DashboardState()
    state.apply(
        envelope("user.registered", {"email": "alice@example.com", "full_name": "Alice Liddell"})
    )
    (event,) = state.view(full=True)["events"]
    assert event["summary"] == "email=a***@example.com"


def test_a_final_status_is_never_undone_by_a_later_or_late_event() -> None:
    state = DashboardState()
    rejected, cancelled, shipped = (str(uuid.uuid4()) for _ in range(3))
    for kind, order_id, data in [
        ("order.placed", rejected, {}),
        ("order.rejected", rejected, {"reason": "payment_declined"}),
        ("order.cancelled", rejected, {"reason": "cancelled"}),  # a stray cancel
        ("order.placed", cancelled, {}),
        ("order.confirmed", cancelled, {}),
        ("order.cancelled", cancelled, {"reason": "cancelled"}),
        ("order.confirmed", shipped, {}),
        ("order.shipped", shipped, {}),
        ("order.placed", shipped, {}),  # late
        ("order.cancelled", shipped, {}),
    ]:
        state.apply(envelope(kind, {"order_id": order_id, **data}))
    sagas = {s["order_id"]: s for s in state.view(full=True)["sagas"]}
    assert (sagas[rejected]["status"], sagas[rejected]["reason"]) == (
        "rejected",
        "payment_declined",
    )
    assert sagas[cancelled]["status"] == "cancelled"
    assert sagas[shipped]["status"] == "shipped"
    assert state.view(full=True)["business"]["orders_by_status"] == {
        "cancelled": 1,
        "rejected": 1,
        "shipped": 1,
    }


def test_with_a_gateway_the_totals_count_what_enters_through_it_once() -> None:
    state = DashboardState()
    state.apply(envelope("metrics.snapshot", snapshot_data(service="products")), now=1.0)
    assert state.view(now=1.0, full=True)["totals"]["rps"] == 50.0
    assert state.view(now=1.0, full=True)["totals"]["counted_at"] == "services"
    state.apply(envelope("metrics.snapshot", snapshot_data(service="gateway")), now=1.0)
    totals = state.view(now=1.0, full=True)["totals"]
    assert (totals["rps"], totals["errors_per_s"], totals["counted_at"]) == (50.0, 5.0, "gateway")


def _malformed_snapshots() -> list[dict[str, object]]:
    good = snapshot_data()
    return [
        {**good, "requests": "not an object"},
        {**good, "requests": {**good["requests"], "rate": float("nan")}},
        {**good, "requests": {**good["requests"], "p99_ms": float("inf")}},
        {**good, "requests": {**good["requests"], "count": -1}},
        {**good, "errors": {**good["errors"], "ratio": 7.0}},
        {**good, "process": {**good["process"], "pid": "one"}},
        {**good, "instance": "x" * 5000},
        {**good, "service": ""},
        {**good, "host": "h" * 10_000},
        {**good, "cache": {f"tier{n}": {"hits": 1, "misses": 1, "ratio": 0.5} for n in range(50)}},
        {**good, "business": {f"figure{n}": n for n in range(1000)}},
        {**good, "business": {"nested": [[1, 2], [3]]}},
        {**good, "business": {"by": {"k": "not a number"}}},
        {**good, "bus": {**good["bus"], "connected": "maybe"}},
        {key: value for key, value in good.items() if key != "requests"},
    ]


def test_malformed_snapshots_are_dropped_counted_and_never_break_the_view() -> None:
    rejected: list[str] = []
    state = DashboardState(on_reject=rejected.append)
    bad = _malformed_snapshots()
    for data in bad:
        assert not state.apply(envelope("metrics.snapshot", data), now=1.0), data
    assert state.instances == {}
    assert rejected == ["snapshot"] * len(bad)
    assert state.rejected == len(bad)
    assert state.apply(envelope("metrics.snapshot", snapshot_data()), now=1.0)
    view = state.view(now=1.5, full=True)
    assert view["totals"]["feed_rejected"] == len(bad)
    assert [i["key"] for s in view["services"] for i in s["instances"]] == ["users/host:1:abc"]


def test_malformed_events_are_dropped_and_a_bounded_envelope_is_required() -> None:
    rejected: list[str] = []
    state = DashboardState(on_reject=rejected.append)
    order_id = str(uuid.uuid4())
    for kind, data in [
        ("order.placed", {"order_id": ["not", "a", "string"]}),
        ("order.placed", {"order_id": order_id, "total_cents": float("inf")}),
        ("order.confirmed", {"order_id": order_id, "total_cents": -5}),
        ("product.created", {"name": "n" * 100_000}),
        ("payment.declined", {"order_id": order_id, "reason": {"nested": True}}),
    ]:
        assert not state.apply(envelope(kind, data), now=1.0)
    assert not state.apply(envelope("order.placed", {"order_id": order_id}, source="s" * 500))
    long_correlation = envelope("order.placed", {"order_id": order_id}, correlation_id="c" * 500)
    assert not state.apply(long_correlation)
    assert rejected == ["event"] * 7
    assert state.sagas == {}
    assert not state.events
    # What the dashboard does not read is not its business: an unknown field passes.
    assert state.apply(envelope("order.placed", {"order_id": order_id, "extra": [1, {"a": 2}]}))
    assert list(state.sagas) == [order_id]


def test_the_public_view_hides_hosts_pids_and_ids_behind_stable_pseudonyms() -> None:
    state = DashboardState()
    order_id, correlation = str(uuid.uuid4()), "corr-secret-1"
    state.apply(envelope("metrics.snapshot", snapshot_data(host="db-host-7")), now=1.0)
    state.apply(
        envelope(
            "order.placed", {"order_id": order_id, "total_cents": 10}, correlation_id=correlation
        ),
        now=1.0,
    )
    full, public = state.view(now=1.5, full=True), state.view(now=1.5, full=False)
    assert "db-host-7" in str(full)
    assert "host:1:abc" in str(full)
    for secret in ("db-host-7", "host:1:abc", order_id, order_id[:8], correlation):
        assert secret not in str(public), secret
        assert secret not in str(state.history(full=False)), secret
    (item,) = public["services"][0]["instances"]
    assert item["key"] in state.history(full=False)
    assert state.view(now=2.0, full=False)["services"][0]["instances"][0]["key"] == item["key"]
    (event,) = public["events"]
    assert event["id"] is None
    assert "order_id" not in event["summary"]
    assert "total_cents=10" in event["summary"]
    assert "public_summary" not in full["events"][0]
    assert f"order_id={order_id[:8]}" in full["events"][0]["summary"]
    # Another process keys its pseudonyms differently: they cannot be looked up elsewhere.
    assert DashboardState().pseudonym("host:1:abc") != state.pseudonym("host:1:abc")

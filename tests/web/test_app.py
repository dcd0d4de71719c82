"""The dashboard app over the in-memory bus: page, JSON, live stream, escaping, CSP, silence.

Run as ``env="test"``: the data needs a token with ``metrics:read`` (``operator()``), except where
a test makes the dashboard public."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import ClientResponse

from core.bus import Bus
from core.snapshot import SNAPSHOT
from core.testing import wait_for
from tests.web.conftest import Client, envelope, operator, snapshot_data
from web.app import DASHBOARD_CSP

EVIL = "<script>alert('pwned')</script>"
EVIL_PRODUCT = "<script>alert(1)</script><img src=x onerror=alert(1)>"


async def _state(client: Client, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = await client.get(
        "/dashboard/api/state", headers=operator() if headers is None else headers
    )
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body["view"]


def _instances(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["key"]: i for s in view["services"] for i in s["instances"]}


async def test_the_page_renders_the_state_with_every_value_escaped(
    make_client: Callable[..., Awaitable[Client]], publisher: Bus
) -> None:
    client = await make_client(dashboard_public=True)
    await publisher.publish_envelope(
        envelope(
            "metrics.snapshot",
            snapshot_data(
                service=EVIL,
                instance=f"{EVIL}:1",
                host="<b>secret-host</b>",
                business={EVIL: EVIL_PRODUCT, "registrations": 3},
                cache={EVIL: {"hits": 1, "misses": 1, "ratio": 0.5}},
            ),
        )
    )
    await publisher.publish_envelope(
        envelope(
            "user.registered",
            {
                "user_id": str(uuid.uuid4()),
                "email": "eve@example.com",
                "full_name": "Eve Full-Name",
                "roles": ["customer"],
                "created_at": "2026-01-01T00:00:00Z",
            },
        )
    )
    product = {
        "product_id": str(uuid.uuid4()),
        "sku": "EVIL-1",
        "name": EVIL_PRODUCT,
        "price_cents": 1,
        "currency": "USD",
        "category_id": None,
        "attributes": {},
        "stock": 0,
        "created_at": "2026-01-01T00:00:00Z",
    }
    await publisher.publish_envelope(envelope("product.created", product))

    async def seen() -> bool:
        view = await _state(client, headers={})
        return any(s["service"] == EVIL for s in view["services"]) and len(view["events"]) >= 2

    await wait_for(seen, within=5)
    response = await client.get("/dashboard")
    assert response.status == 200
    assert response.content_type == "text/html"
    html = await response.text()
    assert EVIL not in html
    assert EVIL_PRODUCT not in html
    assert "<img" not in html
    assert html.count("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;") >= 3  # service,
    # its business figure and its cache tier
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "e***@example.com" in html  # a public page: addresses masked, names left out
    assert "eve@example.com" not in html
    assert "Eve Full-Name" not in html
    # No inline script or style anywhere: the CSP forbids them.
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert "<style" not in html
    assert " style=" not in html
    assert re.findall(r"<[^>]*\son\w+=", html) == []  # no event handler in any tag
    # Public: neither the host nor the instance name is shown.
    assert "secret-host" not in html
    assert "pwned&#39;)&lt;/script&gt;:1" not in html


async def test_dashboard_responses_carry_a_strict_content_security_policy(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client()
    for path in ("/dashboard", "/dashboard/api/state", "/dashboard/static/dashboard.js"):
        response = await client.get(path, headers=operator())
        assert response.status == 200, path
        policy = response.headers["Content-Security-Policy"]
        assert policy == DASHBOARD_CSP
        assert "default-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert "unsafe-eval" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_static_assets_are_served_from_the_package_only(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client()
    script = await client.get("/dashboard/static/dashboard.js")
    assert script.content_type in ("application/javascript", "text/javascript")
    source = await script.text()
    # The stream is read with fetch() and a bearer header: no EventSource (it cannot send one),
    # no token kept anywhere but in memory, no data inserted as HTML.
    assert "getReader()" in source
    assert "Authorization" in source
    for banned in ("EventSource", "localStorage", "sessionStorage", "document.cookie"):
        assert banned not in source, banned
    assert "innerHTML" not in source
    assert "insertAdjacentHTML" not in source
    style = await client.get("/dashboard/static/dashboard.css")
    assert style.content_type == "text/css"
    for path in ("/dashboard/static/nope.js", "/dashboard/static/..%2Fapp.py"):
        assert (await client.get(path)).status == 404, path
    html = await (await client.get("/dashboard")).text()
    for asset in re.findall(r'(?:src|href)="(/[^"]+)"', html):
        assert asset.startswith("/dashboard/"), asset  # reachable through the gateway's prefix
        assert "//" not in asset[1:]
        assert (await client.get(asset)).status == 200, asset


async def test_the_dashboard_has_the_operational_routes_and_its_own_snapshot(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client()
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    assert "http_requests_total" in await (await client.get("/metrics")).text()
    own = f"web/{client.app[SNAPSHOT].instance}"

    async def sees_itself() -> bool:
        return own in _instances(await _state(client))

    await wait_for(sees_itself, within=5)
    response = await client.get("/dashboard/", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/dashboard"


async def _events(response: ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Parse a text/event-stream body into (event, data) pairs."""
    kind, data = "message", b""
    async for raw in response.content:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield kind, orjson.loads(data)
            kind, data = "message", b""
        elif line.startswith(b"event: "):
            kind = line[7:].decode()
        elif line.startswith(b"data: "):
            data += line[6:]


async def test_the_stream_sends_the_state_then_ticks_with_new_points(
    make_client: Callable[..., Awaitable[Client]], publisher: Bus
) -> None:
    client = await make_client()
    response = await client.get("/dashboard/stream", headers=operator())
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    events = _events(response)
    kind, first = await anext(events)
    assert kind == "state"
    assert set(first) == {"view", "history"}

    instance = f"streamed-{uuid.uuid4().hex[:6]}"
    key = f"products/{instance}"
    ticks = 0
    points = 0
    async with asyncio.timeout(10):
        while points < 3:
            await publisher.publish_envelope(
                envelope("metrics.snapshot", snapshot_data(service="products", instance=instance))
            )
            kind, data = await anext(events)
            assert kind == "tick"
            ticks += 1
            points += len(data["history"].get(key, {}).get("points", []))
            if points:
                assert key in _instances(data["view"])
    assert ticks >= 3
    response.close()


async def test_an_instance_silent_too_long_is_shown_down_with_its_last_seen_time(
    make_client: Callable[..., Awaitable[Client]], publisher: Bus
) -> None:
    client = await make_client(
        dashboard_stale_after=1.0, dashboard_down_after=2.0, dashboard_public=True
    )
    key = "users/quiet:1"
    await publisher.publish_envelope(
        envelope("metrics.snapshot", snapshot_data(instance="quiet:1"))
    )

    async def health() -> str | None:
        instance = _instances(await _state(client)).get(key)
        return None if instance is None else str(instance["health"])

    async def is_(expected: str) -> bool:
        return await health() == expected

    await wait_for(lambda: is_("up"), within=5)
    await wait_for(lambda: is_("degraded"), within=5)
    await wait_for(lambda: is_("down"), within=5)
    instance = _instances(await _state(client))[key]
    assert instance["silent_for"] >= 2.0
    assert instance["last_seen"].endswith("Z")
    html = await (await client.get("/dashboard")).text()
    assert re.search(r'class="badge h-down" title="no snapshot for \d+ s">down<', html), html


async def test_order_events_make_a_live_saga_view(
    make_client: Callable[..., Awaitable[Client]], publisher: Bus
) -> None:
    client = await make_client(dashboard_public=True)
    order_id, correlation = str(uuid.uuid4()), f"corr-{uuid.uuid4().hex[:8]}"
    placed = {
        "order_id": order_id,
        "user_id": str(uuid.uuid4()),
        "items": [{"product_id": str(uuid.uuid4()), "quantity": 1, "unit_price_cents": 1999}],
        "total_cents": 1999,
        "currency": "USD",
    }
    for kind, data in [
        ("order.placed", placed),
        ("inventory.reserved", {"order_id": order_id, "items": []}),
        (
            "payment.authorized",
            {
                "order_id": order_id,
                "payment_id": str(uuid.uuid4()),
                "amount_cents": 1999,
                "currency": "USD",
            },
        ),
        (
            "order.confirmed",
            {
                "order_id": order_id,
                "user_id": placed["user_id"],
                "total_cents": 1999,
                "currency": "USD",
            },
        ),
    ]:
        await publisher.publish_envelope(envelope(kind, data, correlation_id=correlation))

    async def confirmed() -> dict[str, Any] | None:
        for saga in (await _state(client))["sagas"]:
            if saga["order_id"] == order_id and saga["status"] == "confirmed":
                return dict(saga)
        return None

    saga = await wait_for(confirmed, within=5)
    assert saga["correlation_id"] == correlation
    assert [s["label"] for s in saga["steps"]] == ["placed", "reserved", "authorized", "confirmed"]
    # The public page shows the saga without its ids.
    html = await (await client.get("/dashboard")).text()
    assert "19.99 USD" in html
    assert "authorized" in html
    assert order_id[:8] not in html
    assert correlation[:12] not in html


async def test_history_is_in_the_json_on_request(
    make_client: Callable[..., Awaitable[Client]], publisher: Bus
) -> None:
    client = await make_client()
    await publisher.publish_envelope(envelope("metrics.snapshot", snapshot_data(instance="h:1")))

    async def with_history() -> dict[str, Any] | None:
        response = await client.get("/dashboard/api/state?history=1", headers=operator())
        body: dict[str, Any] = await response.json()
        return body if "users/h:1" in body["history"] else None

    body = await wait_for(with_history, within=5)
    assert body["fields"][0] == "t"
    assert body["history"]["users/h:1"]["points"]
    plain = await (await client.get("/dashboard/api/state", headers=operator())).json()
    assert "history" not in plain


async def test_malformed_messages_on_the_bus_are_dropped_counted_and_break_nothing(
    make_client: Callable[..., Awaitable[Client]], publisher: Bus
) -> None:
    client = await make_client(metrics_snapshot_interval=0)
    good = snapshot_data(instance="good:1")
    # Each passes the bus's own checks (core's MetricsSnapshot) but not the dashboard's bounds.
    for data in (
        {**good, "instance": "bad:" + "x" * 5000},
        {**good, "instance": "bad:2", "service": ""},
        {**good, "instance": "bad:3", "business": {f"k{n}": n for n in range(1000)}},
        {**good, "instance": "bad:4", "business": {"nested": [[1], {"deep": [2]}]}},
        {**good, "instance": "bad:5", "host": "<b>" * 1000},
    ):
        await publisher.publish_envelope(envelope("metrics.snapshot", data))
    await publisher.publish_envelope(envelope("order.mystery", {"order_id": ["a", "list"]}))
    await publisher.publish_envelope(envelope("metrics.snapshot", good))

    async def settled() -> dict[str, Any] | None:
        view = await _state(client)
        done = "users/good:1" in _instances(view) and view["totals"]["feed_rejected"] >= 6
        return view if done else None

    view = await wait_for(settled, within=5)
    assert view["totals"]["feed_rejected"] == 6
    assert not [key for key in _instances(view) if "bad" in key]
    metrics = await (await client.get("/metrics")).text()
    assert 'dashboard_feed_rejected_total{kind="snapshot"} 5.0' in metrics
    assert 'dashboard_feed_rejected_total{kind="event"} 1.0' in metrics
    assert (await client.get("/dashboard", headers=operator())).status == 200
    stream = await client.get("/dashboard/stream", headers=operator())
    assert stream.status == 200
    stream.close()

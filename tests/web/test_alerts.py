"""The dashboard's Alertmanager webhook: its token, its validation, the whole body however it
is sent, and the alerts it keeps (firing shown, resolved or expired removed) in the JSON state,
whose public view names no host."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp.test_utils import TestClient

from core.testing import assert_problem
from tests.web.conftest import operator
from web.alerts import ALERT_TTL, MAX_BODY, AlertBook, Notification

Client = TestClient[Any, Any]
TOKEN = "s3cret-alerts-token"
HOOK = "/dashboard/api/alerts"


def _alert(status: str, fingerprint: str = "f1", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {
            "alertname": "InstanceDown",
            "severity": "critical",
            "job": "orders",
            "instance": "orders",
            **labels,
        },
        "annotations": {"summary": "orders instance orders is down", "runbook": "docs/x.md#y"},
        "startsAt": "2026-01-02T03:04:05.678Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up+%3D%3D+0",
        "fingerprint": fingerprint,
    }


def _notification(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="InstanceDown"}',
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": "dashboard",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "truncatedAlerts": 0,
        "alerts": list(alerts),
    }


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _view(client: Client, full: bool = True) -> dict[str, Any]:
    response = await client.get("/dashboard/api/state", headers=operator() if full else {})
    body: dict[str, Any] = await response.json()
    return dict(body["view"]["alerts"])


async def test_without_a_token_configured_the_webhook_does_not_exist(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client()
    response = await client.post(HOOK, json=_notification(_alert("firing")), headers=_auth())
    await assert_problem(response, 404)


async def test_the_webhook_needs_the_token(make_client: Callable[..., Awaitable[Client]]) -> None:
    client = await make_client(dashboard_alerts_token=TOKEN)
    body = _notification(_alert("firing"))
    await assert_problem(await client.post(HOOK, json=body), 401)
    await assert_problem(await client.post(HOOK, json=body, headers=_auth("wrong")), 401)
    await assert_problem(
        await client.post(HOOK, json=body, headers={"Authorization": f"Basic {TOKEN}"}), 401
    )
    assert (await _view(client))["firing"] == 0


async def test_the_webhook_refuses_what_is_not_an_alertmanager_notification(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client(dashboard_alerts_token=TOKEN)
    await assert_problem(await client.post(HOOK, data=b"{not json", headers=_auth()), 400)
    await assert_problem(await client.post(HOOK, json={"alerts": []}, headers=_auth()), 422)
    bad = _alert("firing")
    bad["status"] = "exploded"
    await assert_problem(await client.post(HOOK, json=_notification(bad), headers=_auth()), 422)
    huge = _notification(_alert("firing", summary="x" * 600_000))
    await assert_problem(await client.post(HOOK, json=huge, headers=_auth()), 413)
    assert (await _view(client))["firing"] == 0


async def test_firing_alerts_are_shown_and_resolved_ones_removed(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client(dashboard_alerts_token=TOKEN, dashboard_public=True)
    warning = _alert("firing", "f2", alertname="OutboxLag", severity="warning")
    warning["generatorURL"] = "javascript:alert(1)"
    response = await client.post(
        HOOK, json=_notification(warning, _alert("firing")), headers=_auth()
    )
    assert response.status == 200
    view = await _view(client)
    assert view["firing"] == 2
    assert view["worst"] == "critical"
    first, second = view["alerts"]
    assert first["name"] == "InstanceDown"
    assert first["instance"] == "orders"
    assert first["since"] == "2026-01-02T03:04:05.678000Z"
    assert first["graph"].startswith("http://127.0.0.1:9090/graph?")
    assert first["summary"] == "orders instance orders is down"
    assert second["name"] == "OutboxLag"
    assert second["graph"] is None  # never a script link
    public = await _view(client, full=False)
    assert public["firing"] == 2
    assert public["alerts"][0] == {
        "name": "InstanceDown",
        "severity": "critical",
        "since": "2026-01-02T03:04:05.678000Z",
    }
    await client.post(HOOK, json=_notification(_alert("resolved")), headers=_auth())
    view = await _view(client)
    assert [a["name"] for a in view["alerts"]] == ["OutboxLag"]
    assert view["worst"] == "warning"


async def _chunked(body: bytes, piece: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(body), piece):
        yield body[start : start + piece]


async def test_a_chunked_notification_is_read_whole(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client(dashboard_alerts_token=TOKEN)
    # 190 KB without Content-Length: more than one read of the stream returns.
    alerts = [_alert("firing", f"f{i}", alertname=f"A{i}") for i in range(44)]
    for alert in alerts:
        alert["annotations"]["description"] = "d" * 4000
    body = orjson.dumps(_notification(*alerts))
    assert 180_000 < len(body) < MAX_BODY
    headers = {**_auth(), "Content-Type": "application/json"}
    response = await client.post(HOOK, data=_chunked(body), headers=headers)
    assert response.status == 200, await response.text()
    assert (await response.json())["firing"] == 44
    assert (await _view(client))["firing"] == 44
    huge = orjson.dumps(_notification(_alert("firing", "big", summary="x" * (MAX_BODY + 1))))
    await assert_problem(await client.post(HOOK, data=_chunked(huge), headers=headers), 413)
    assert (await _view(client))["firing"] == 44


async def test_a_firing_alert_past_its_ends_at_is_not_shown(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client(dashboard_alerts_token=TOKEN)
    ended = _alert("firing", "ended")
    ended["endsAt"] = _at(datetime.now(UTC) - timedelta(minutes=1))
    response = await client.post(
        HOOK, json=_notification(ended, _alert("firing", "live")), headers=_auth()
    )
    assert response.status == 200
    assert (await response.json())["firing"] == 1
    assert [a["fingerprint"] for a in (await _view(client))["alerts"]] == ["live"]


async def test_a_naive_starts_at_is_refused_and_the_state_still_renders(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client(dashboard_alerts_token=TOKEN)
    await client.post(HOOK, json=_notification(_alert("firing", "aware")), headers=_auth())
    naive = _alert("firing", "naive")
    naive["startsAt"] = "2026-01-02T03:04:05"
    response = await client.post(HOOK, json=_notification(naive), headers=_auth())
    await assert_problem(response, 422)
    view = await _view(client)
    assert [a["fingerprint"] for a in view["alerts"]] == ["aware"]


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 2, 4, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _at(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_an_alert_whose_ends_at_passed_disappears_without_a_resolve() -> None:
    clock = Clock()
    book = AlertBook(clock=clock)
    alert = _alert("firing")
    alert["endsAt"] = _at(clock.now + timedelta(minutes=4))
    book.apply(Notification.model_validate(_notification(alert, _alert("firing", "f2"))))
    assert book.view()["firing"] == 2
    clock.now += timedelta(minutes=4)
    view = book.view(full=True)
    assert [a["fingerprint"] for a in view["alerts"]] == ["f2"]
    assert book.expired == 1


def test_a_firing_alert_not_notified_again_within_the_ttl_is_forgotten() -> None:
    # Alertmanager sends a firing alert's endsAt as the zero time: only the dashboard's TTL,
    # renewed by every repeated notification, ends it when its resolve never arrives.
    clock = Clock()
    book = AlertBook(clock=clock)
    firing = Notification.model_validate(_notification(_alert("firing")))
    book.apply(firing)
    clock.now += ALERT_TTL - timedelta(seconds=1)
    assert book.view()["firing"] == 1
    book.apply(firing)  # the repeat notification
    clock.now += ALERT_TTL - timedelta(seconds=1)
    assert book.view()["firing"] == 1
    clock.now += timedelta(seconds=1)
    assert book.view() == {"firing": 0, "worst": None, "dropped": 0, "alerts": []}
    book.apply(firing)  # firing again: shown again
    assert book.view()["firing"] == 1

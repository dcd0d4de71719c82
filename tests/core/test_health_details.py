"""``/readyz`` details: figures with thresholds from settings, refreshed in the background;
a warning leaves readiness alone unless ``HEALTH_WARN_FAILS_READINESS``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

import core
from core.bus import Bus, InMemoryTransport, Message, PermanentFailure, bus_ctx, bus_workers_ctx
from core.health import Detail
from core.testing import wait_for
from tests.core.conftest import ClientFactory, SettingsFactory
from tests.services.products.helpers import Client


def _figure_app(settings: Any, value: list[float]) -> web.Application:
    """An app with one probe, ``lag``, measured against a threshold of 10."""

    async def resource(app: web.Application) -> AsyncIterator[None]:
        async def probe() -> Mapping[str, Detail]:
            return {"lag": Detail.against(value[0], 10.0, {"unit": "seconds"})}

        app[core.HEALTH].add_detail("lag", probe)
        yield

    return core.create_app("t", settings, resources=[resource])


async def _readyz_when(client: Client, status: str) -> tuple[int, dict[str, Any]]:
    """``/readyz`` once its ``lag`` figure reads ``status``."""

    async def answered() -> tuple[int, dict[str, Any]] | None:
        response = await client.get("/readyz")
        body: dict[str, Any] = await response.json()
        lag = body.get("details", {}).get("lag", {})
        return (response.status, body) if lag.get("status") == status else None

    result: tuple[int, dict[str, Any]] = await wait_for(answered, within=5)
    return result


async def test_a_figure_past_its_threshold_warns_and_readiness_stays(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    value = [3.0]
    client = await service_client(_figure_app(make_settings(health_details_interval=0.05), value))
    status, body = await _readyz_when(client, "ok")
    assert status == 200
    assert body == {
        "status": "ok",
        "checks": {},
        "details": {"lag": {"value": 3.0, "threshold": 10.0, "status": "ok", "unit": "seconds"}},
    }
    value[0] = 12.5
    status, body = await _readyz_when(client, "warn")
    assert status == 200
    assert body["status"] == "ok"
    assert body["details"]["lag"]["value"] == 12.5


async def test_warnings_fail_readiness_only_when_the_settings_say_so(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    settings = make_settings(health_details_interval=0.05, health_warn_fails_readiness=True)
    client = await service_client(_figure_app(settings, [12.5]))
    status, body = await _readyz_when(client, "warn")
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"] == {}  # every dependency answers: only the figure failed it


async def test_a_failing_probe_reads_unknown_and_does_not_fail_readiness(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    async def resource(app: web.Application) -> AsyncIterator[None]:
        async def probe() -> Mapping[str, Detail]:
            raise ConnectionError("the broker is away")

        app[core.HEALTH].add_detail("broken", probe)
        yield

    app = core.create_app("t", make_settings(health_details_interval=0.05), resources=[resource])
    client = await service_client(app)

    async def reported() -> dict[str, Any]:
        body: dict[str, Any] = await (await client.get("/readyz")).json()
        return body if "details" in body else {}

    body = await wait_for(reported)
    assert body["status"] == "ok"
    assert body["details"] == {"broken": {"status": "unknown", "error": "unavailable"}}


async def _parked_app(
    service_client: ClientFactory, settings: Any
) -> tuple[Client, InMemoryTransport]:
    transport = InMemoryTransport()

    async def refuse(message: Message) -> None:
        raise PermanentFailure("never")

    def setup(app: web.Application, bus: Bus) -> None:
        bus.subscribe("thing.*", refuse, queue="things")

    app = core.create_app(
        "t",
        settings,
        resources=[bus_ctx(settings, setup=setup, transport=transport), bus_workers_ctx(None)],
    )
    client = await service_client(app)
    await transport.publish("thing.made", b"{}", message_id="m1")
    return client, transport


async def test_parked_messages_warn_against_the_threshold_of_the_settings(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    client, _ = await _parked_app(service_client, make_settings(health_details_interval=0.05))

    async def parked() -> dict[str, Any]:
        body: dict[str, Any] = await (await client.get("/readyz")).json()
        figure: dict[str, Any] = body.get("details", {}).get("parked", {})
        return body if figure.get("value") == 1 else {}

    body = await wait_for(parked)
    assert body["status"] == "ok"
    assert body["checks"] == {"bus": {"status": "up"}}
    assert body["details"]["parked"] == {
        "value": 1,
        "threshold": 0,
        "status": "warn",
        "unit": "messages",
        "queues": {"things": 1},
    }


async def test_a_higher_parked_threshold_keeps_the_figure_ok(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    settings = make_settings(health_details_interval=0.05, health_parked_warn=5)
    client, _ = await _parked_app(service_client, settings)

    async def parked() -> dict[str, Any]:
        body: dict[str, Any] = await (await client.get("/readyz")).json()
        figure: dict[str, Any] = body.get("details", {}).get("parked", {})
        return figure if figure.get("value") == 1 else {}

    figure = await wait_for(parked)
    assert (figure["status"], figure["threshold"]) == ("ok", 5)

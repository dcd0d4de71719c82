"""The dashboard behind the gateway: pages and its live WebSocket."""

from __future__ import annotations

import aiohttp
import pytest

from core.testing import assert_problem, wait_for
from tests.gateway.conftest import Client, FakeFactory, FakeUpstream, GatewayFactory, metric


@pytest.fixture
async def web_upstream(fake_upstream: FakeFactory) -> FakeUpstream:
    return await fake_upstream("web")


@pytest.fixture
async def gateway(web_upstream: FakeUpstream, make_gateway: GatewayFactory) -> Client:
    return await make_gateway(upstream_web=web_upstream.url)


async def test_the_dashboard_is_reachable_without_a_token(gateway: Client) -> None:
    response = await gateway.get("/dashboard")
    assert response.status == 200
    assert (await response.json())["name"] == "web"
    assert (await gateway.get("/dashboard/static/app.css")).status == 200


async def test_websocket_frames_flow_both_ways_and_close_codes_carry(
    gateway: Client, web_upstream: FakeUpstream
) -> None:
    async with gateway.ws_connect("/dashboard/ws", protocols=("dash.v1",)) as ws:
        assert ws.protocol == "dash.v1"
        await ws.send_str("hello")
        assert await ws.receive_str() == "web:hello"
        await ws.send_bytes(b"\x01\x02\x03")
        assert await ws.receive_bytes() == b"\x03\x02\x01"
        await ws.send_str("close")
        message = await ws.receive()
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4000
    seen = [entry for entry in await web_upstream.seen() if entry["path"] == "/dashboard/ws"]
    assert len(seen) == 1
    assert seen[0]["correlation_id"]
    await wait_for(lambda: _settled(gateway))


async def test_a_client_closing_its_websocket_closes_the_upstream_one(gateway: Client) -> None:
    for _ in range(3):
        async with gateway.ws_connect("/dashboard/ws") as ws:
            await ws.send_str("ping")
            assert await ws.receive_str() == "web:ping"
    await wait_for(lambda: _settled(gateway))


async def test_a_websocket_to_a_down_upstream_is_503(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway()
    response = await gateway.get(
        "/dashboard/ws",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    await assert_problem(response, 503)


async def _settled(gateway: Client) -> bool:
    return await metric(gateway, "gateway_instance_outstanding", instance="web-0") == 0

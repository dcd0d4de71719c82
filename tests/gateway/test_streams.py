"""Long-lived streams at the gateway: their own pool, caps per client and in total, a lifetime.

A real gateway (in the test's loop) in front of a real fake upstream process whose
``/dashboard/stream`` is an endless Server-Sent Events stream. Hundreds of streams are opened
from the test (bounded in count and time, to 127.0.0.1 only) while API reads go through the
same gateway, whose API pool is kept small on purpose: were the streams to take it, the reads
would starve.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest

from core import BaseServiceSettings, token_codec
from core.auth import TokenCodec
from core.errors import ServiceUnavailable, TooManyRequests
from core.keys import AUTHENTICATOR
from core.testing import assert_problem, wait_for
from gateway.proxy import PROXY
from gateway.streams import StreamLimiter
from tests.gateway.conftest import Client, FakeFactory, FakeUpstream, GatewayFactory, metric

STREAM = "/dashboard/stream?every=2"
MARGIN = 6.0  # seconds of slack on a busy 2-core machine


@pytest.fixture
def signer() -> TokenCodec:
    return token_codec(BaseServiceSettings(_env_file=None, env="test"), signing=True)  # type: ignore[call-arg]


def _token(signer: TokenCodec, *permissions: str) -> str:
    user = str(uuid.uuid4())
    return signer.issue(
        "access", user_id=user, roles=("customer",), permissions=permissions, family=user
    ).token


@pytest.fixture
async def web_upstream(fake_upstream: FakeFactory) -> FakeUpstream:
    return await fake_upstream("web")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session of its own, unlimited: the test decides how many connections it opens."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as client:
        yield client


@dataclass
class Opened:
    """The outcome of opening many streams: those held open, and the refusals' answers."""

    streams: list[aiohttp.ClientResponse] = field(default_factory=list)
    refusals: list[tuple[int, str, str | None, dict[str, object]]] = field(default_factory=list)

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for status, *_ in self.refusals:
            counts[status] = counts.get(status, 0) + 1
        return counts

    def close(self) -> None:
        for response in self.streams:
            response.close()
        self.streams.clear()


async def _open(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], opened: Opened
) -> None:
    response = await session.get(url, headers=headers)
    if response.status == 200:
        assert await response.content.readline() == b"data: web\n"
        opened.streams.append(response)
        return
    body = await response.json(content_type=None)
    opened.refusals.append(
        (
            response.status,
            response.headers.get("Content-Type", ""),
            response.headers.get("Retry-After"),
            body,
        )
    )
    response.release()


async def open_streams(
    session: aiohttp.ClientSession,
    gateway: Client,
    headers: list[dict[str, str]],
    *,
    within: float = 90.0,
) -> Opened:
    """Open one stream per entry of ``headers`` at once; all answered within ``within`` s."""
    opened = Opened()
    url = str(gateway.make_url(STREAM))
    try:
        async with asyncio.timeout(within):
            await asyncio.gather(*(_open(session, url, h, opened) for h in headers))
    except BaseException:
        opened.close()
        raise
    return opened


async def api_reads_succeed(gateway: Client, count: int = 30) -> None:
    """``count`` API reads through the gateway, all answered by the upstream."""
    for n in range(count):
        response = await gateway.get(f"/api/v1/products/{n}")
        assert response.status == 200, await response.text()
        assert (await response.json())["name"] == "web"


async def _settled(gateway: Client) -> bool:
    return await metric(gateway, "gateway_streams_open") == 0


async def test_one_client_gets_its_cap_and_the_api_never_starves(
    web_upstream: FakeUpstream,
    make_gateway: GatewayFactory,
    session: aiohttp.ClientSession,
    signer: TokenCodec,
) -> None:
    gateway = await make_gateway(
        upstream_web=web_upstream.url,
        upstream_products=web_upstream.url,
        rate_limit_enabled=False,
        upstream_pool_size=4,  # the API's: streams must never use it
        stream_max_per_client=4,
    )
    opened = await open_streams(session, gateway, [{}] * 600)
    try:
        assert len(opened.streams) == 4
        assert opened.statuses() == {429: 596}
        _, content_type, retry_after, body = opened.refusals[0]
        assert content_type.startswith("application/problem+json")
        assert retry_after is not None
        assert int(retry_after) > 0
        assert body["status"] == 429
        assert "per client" in str(body["detail"])
        await api_reads_succeed(gateway)
        # A signed-in operator is another client: not locked out by the anonymous one.
        token = {"Authorization": f"Bearer {_token(signer)}"}
        operator = await open_streams(session, gateway, [token])
        assert len(operator.streams) == 1
        operator.close()
        await api_reads_succeed(gateway, 5)
    finally:
        opened.close()
    await wait_for(lambda: _settled(gateway), within=10)
    again = await open_streams(session, gateway, [{}])  # the places are free again
    assert len(again.streams) == 1
    again.close()


async def test_anonymous_floods_cannot_take_the_authenticated_share(
    web_upstream: FakeUpstream,
    make_gateway: GatewayFactory,
    session: aiohttp.ClientSession,
    signer: TokenCodec,
) -> None:
    # Behind a trusted proxy, 600 anonymous streams from 150 client addresses (4 each).
    gateway = await make_gateway(
        upstream_web=web_upstream.url,
        upstream_products=web_upstream.url,
        rate_limit_enabled=False,
        trusted_proxies=["127.0.0.1"],
        upstream_pool_size=4,
        stream_max_per_client=4,
        stream_max_total=60,
        stream_anonymous_share=0.5,
        stream_operator_reserve=6,
    )
    flood = [{"X-Forwarded-For": f"198.51.100.{n % 150}"} for n in range(600)]
    opened = await open_streams(session, gateway, flood)
    operators: list[Opened] = []
    try:
        assert len(opened.streams) == 30  # half of the total, no more
        assert opened.statuses() == {503: 570}
        _, content_type, retry_after, body = opened.refusals[0]
        assert content_type.startswith("application/problem+json")
        assert retry_after is not None
        assert int(retry_after) > 0
        assert body["status"] == 503
        await api_reads_succeed(gateway)
        # Authenticated users still get in, up to their own cap each.
        token = {"Authorization": f"Bearer {_token(signer)}"}
        operators.append(await open_streams(session, gateway, [token] * 5))
        assert len(operators[-1].streams) == 4
        assert operators[-1].statuses() == {429: 1}
        for _ in range(5):
            other = {"Authorization": f"Bearer {_token(signer)}"}
            operators.append(await open_streams(session, gateway, [other] * 4))
        # 30 anonymous + 24 authenticated = 54: the last 6 places are the operators'. Anyone
        # can register, so accounts alone cannot take them...
        late = {"Authorization": f"Bearer {_token(signer)}"}
        operators.append(await open_streams(session, gateway, [late] * 2))
        assert operators[-1].statuses() == {503: 2}
        # ...and metrics:read holders can, up to the total.
        for expected in (4, 2):
            ops = {"Authorization": f"Bearer {_token(signer, 'metrics:read')}"}
            operators.append(await open_streams(session, gateway, [ops] * 4))
            assert len(operators[-1].streams) == expected
        assert operators[-1].statuses() == {503: 2}
        assert await metric(gateway, "gateway_streams_open", kind="anonymous") == 30
        assert await metric(gateway, "gateway_streams_open", kind="authenticated") == 30
        await api_reads_succeed(gateway, 5)
    finally:
        opened.close()
        for each in operators:
            each.close()
    await wait_for(lambda: _settled(gateway), within=10)


async def test_a_stream_ends_cleanly_at_its_maximum_lifetime(
    web_upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(
        upstream_web=web_upstream.url, rate_limit_enabled=False, stream_max_lifetime=1.0
    )
    started = time.monotonic()
    async with asyncio.timeout(1 + MARGIN):
        response = await gateway.get("/dashboard/stream?every=0.1")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        body = await response.read()  # a clean end of the chunked body, no error
    assert time.monotonic() - started >= 0.9
    assert body.startswith(b"data: web\n\n")
    assert b": ping\n\n" in body
    assert await metric(gateway, "gateway_streams_expired_total") == 1
    await wait_for(lambda: _settled(gateway), within=10)
    await wait_for(
        lambda: _outstanding_zero(gateway), within=10
    )  # the upstream connection is given back too


async def _outstanding_zero(gateway: Client) -> bool:
    return await metric(gateway, "gateway_instance_outstanding", instance="web-0") == 0


async def test_websockets_are_streams_too(
    web_upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(
        upstream_web=web_upstream.url,
        rate_limit_enabled=False,
        stream_max_per_client=2,
        stream_max_lifetime=1.0,
    )
    first = await gateway.ws_connect("/dashboard/ws")
    second = await gateway.ws_connect("/dashboard/ws")
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await gateway.ws_connect("/dashboard/ws")
        assert refused.value.status == 429
        await first.send_str("hello")
        assert await first.receive_str() == "web:hello"
        async with asyncio.timeout(1 + MARGIN):
            message = await first.receive()
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert first.close_code == aiohttp.WSCloseCode.GOING_AWAY
    finally:
        await first.close()
        await second.close()
    await wait_for(lambda: _settled(gateway), within=10)


async def test_a_websocket_ends_when_its_token_is_revoked(
    web_upstream: FakeUpstream,
    make_gateway: GatewayFactory,
    signer: TokenCodec,
    redis_namespace: str,
) -> None:
    gateway = await make_gateway(
        upstream_web=web_upstream.url, rate_limit_enabled=False, stream_recheck_interval=0.2
    )
    token = _token(signer)
    socket = await gateway.ws_connect("/dashboard/ws", headers={"Authorization": f"Bearer {token}"})
    try:
        await socket.send_str("hello")
        assert await socket.receive_str() == "web:hello"
        claims = signer.decode(token, typ="access")
        revocations = gateway.app[AUTHENTICATOR].revocations
        assert revocations is not None
        await revocations.revoke_token(str(claims["jti"]))
        async with asyncio.timeout(0.2 + MARGIN):
            message = await socket.receive()
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert socket.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION
    finally:
        await socket.close()
    await wait_for(lambda: _settled(gateway), within=10)


async def test_a_refused_stream_never_reaches_the_upstream(
    web_upstream: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(
        upstream_web=web_upstream.url, rate_limit_enabled=False, stream_max_per_client=1
    )
    held = await gateway.get(STREAM)
    try:
        refused = await gateway.get(STREAM)
        await assert_problem(refused, 429)
        seen = [e for e in await web_upstream.seen() if e["path"].startswith("/dashboard/stream")]
        assert len(seen) == 1
    finally:
        held.close()


async def test_streams_have_a_pool_of_their_own(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(upstream_pool_size=7, stream_max_total=33)
    proxy = gateway.app[PROXY]
    assert proxy.stream_session is not proxy.session
    assert proxy.stream_session.connector is not proxy.session.connector
    assert proxy.stream_session.connector is not None
    assert proxy.stream_session.connector.limit == 33


def test_the_limiter_counts_places_back() -> None:
    limiter = StreamLimiter(per_client=2, total=4, anonymous_share=0.5, retry_after=3)
    first = limiter.acquire("ip:a", authenticated=False)
    limiter.acquire("ip:b", authenticated=False)
    with pytest.raises(ServiceUnavailable) as full:
        limiter.acquire("ip:c", authenticated=False)  # the anonymous half is taken
    assert full.value.headers == {"Retry-After": "3"}
    user = [limiter.acquire("user:u", authenticated=True) for _ in range(2)]
    with pytest.raises(TooManyRequests):
        limiter.acquire("user:u", authenticated=True)
    with pytest.raises(ServiceUnavailable):
        limiter.acquire("user:v", authenticated=True)  # all four places are taken
    first.release()
    first.release()  # twice is once
    assert limiter.open == 3
    limiter.acquire("ip:c", authenticated=False)
    for lease in user:
        lease.release()
    assert limiter.open == 2


def test_no_anonymous_streams_with_a_share_of_zero() -> None:
    limiter = StreamLimiter(per_client=4, total=10, anonymous_share=0, retry_after=1)
    with pytest.raises(ServiceUnavailable):
        limiter.acquire("ip:a", authenticated=False)
    assert limiter.acquire("user:a", authenticated=True).authenticated

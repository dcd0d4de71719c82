"""The dashboard's streams are bounded: lifetime, heartbeat, per-client and total caps with a
reserve for authenticated callers, and an end when the caller's token expires or is revoked."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

from aiohttp import ClientResponse

from core.keys import AUTHENTICATOR
from core.testing import assert_problem, wait_for
from tests.web.conftest import Client, ClientFactory, bearer, issue


async def _metric(client: Client, name: str) -> float:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == name:
            return float(value)
    raise AssertionError(f"no {name} in /metrics")


async def _frames(response: ClientResponse) -> AsyncIterator[bytes]:
    """The raw frames of an event stream (events and comments), until it ends."""
    while True:
        try:
            frame = await response.content.readuntil(b"\n\n")
        except asyncio.IncompleteReadError:
            return
        if not frame:
            return
        yield frame


async def _read_to_end(response: ClientResponse, within: float) -> list[bytes]:
    frames = []
    async with asyncio.timeout(within):
        async for frame in _frames(response):
            frames.append(frame)
    return frames


async def test_a_stream_ends_after_its_lifetime(make_client: ClientFactory) -> None:
    client = await make_client(dashboard_stream_lifetime=1.0)
    started = time.monotonic()
    response = await client.get("/dashboard/stream", headers=bearer(issue()))
    assert response.status == 200
    frames = await _read_to_end(response, within=10)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 5, elapsed
    assert frames[0] == b"retry: 2000\n\n"
    assert frames[1].startswith(b"id: ")
    assert b"event: state\n" in frames[1]
    assert any(b"event: tick\n" in frame for frame in frames[2:])
    await wait_for(lambda: _open_streams_are(client, 0), within=5)


async def _open_streams_are(client: Client, expected: float) -> bool:
    return await _metric(client, "dashboard_streams_open") == expected


async def test_a_stream_ends_when_its_token_expires(make_client: ClientFactory) -> None:
    client = await make_client(dashboard_stream_lifetime=600)
    started = time.monotonic()
    response = await client.get("/dashboard/stream", headers=bearer(issue(expires_in=1.5)))
    assert response.status == 200
    await _read_to_end(response, within=10)
    assert time.monotonic() - started < 6


async def test_heartbeats_keep_an_idle_stream_and_a_revoked_token_ends_it(
    make_client: ClientFactory,
) -> None:
    # Pushes far apart: only heartbeats flow between them.
    client = await make_client(dashboard_push_interval=10, dashboard_heartbeat=0.2)
    token = issue()
    response = await client.get("/dashboard/stream", headers=bearer(token))
    assert response.status == 200
    frames = _frames(response)
    assert await anext(frames) == b"retry: 2000\n\n"
    assert b"event: state" in await anext(frames)
    async with asyncio.timeout(5):
        for _ in range(3):
            assert await anext(frames) == b": ping\n\n"
    revocations = client.app[AUTHENTICATOR].revocations
    assert revocations is not None
    await revocations.revoke_token(token.jti)
    rest = []
    async with asyncio.timeout(5):
        async for frame in frames:
            rest.append(frame)
    assert set(rest) <= {b": ping\n\n"}  # then the end, at the next heartbeat
    await assert_problem(await client.get("/dashboard/stream", headers=bearer(token)), 401)


async def test_a_busy_stream_of_a_revoked_token_ends_too(make_client: ClientFactory) -> None:
    """Ticks faster than the heartbeat never leave a moment of silence: the token is checked
    on its own clock all the same."""
    client = await make_client(dashboard_push_interval=0.05, dashboard_heartbeat=0.3)
    token = issue()
    response = await client.get("/dashboard/stream", headers=bearer(token))
    assert response.status == 200
    frames = _frames(response)
    ticks = 0
    async with asyncio.timeout(5):
        async for frame in frames:
            ticks += b"event: tick" in frame
            if ticks >= 10:
                break
    revocations = client.app[AUTHENTICATOR].revocations
    assert revocations is not None
    await revocations.revoke_token(token.jti)
    revoked_at = time.monotonic()
    async with asyncio.timeout(5):
        async for _ in frames:
            pass
    assert time.monotonic() - revoked_at < 3  # one heartbeat (0.3 s) and a margin


async def test_streams_per_client_are_capped_with_a_429(make_client: ClientFactory) -> None:
    client = await make_client(dashboard_streams_per_client=2)
    user = str(uuid.uuid4())
    first = await client.get("/dashboard/stream", headers=bearer(issue(user_id=user)))
    second = await client.get("/dashboard/stream", headers=bearer(issue(user_id=user)))
    assert (first.status, second.status) == (200, 200)
    refused = await client.get("/dashboard/stream", headers=bearer(issue(user_id=user)))
    body = await assert_problem(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0
    assert "this client" in body["detail"]
    other = await client.get("/dashboard/stream", headers=bearer(issue()))
    assert other.status == 200  # another user is not affected
    assert await _metric(client, "dashboard_streams_refused_total") == 1
    first.close()

    async def admitted_again() -> bool:
        response = await client.get("/dashboard/stream", headers=bearer(issue(user_id=user)))
        ok = response.status == 200
        response.close()
        return ok

    await wait_for(admitted_again, within=5)
    for response in (second, other):
        response.close()


async def test_streams_without_metrics_read_cannot_take_the_slots_reserved_for_operators(
    make_client: ClientFactory,
) -> None:
    client = await make_client(
        dashboard_public=True,
        dashboard_streams_total=3,
        dashboard_streams_reserved=1,
        dashboard_streams_per_client=10,
    )
    anonymous = [await client.get("/dashboard/stream") for _ in range(2)]
    assert [r.status for r in anonymous] == [200, 200]
    await assert_problem(await client.get("/dashboard/stream"), 429)  # the reserve is left
    operator = await client.get("/dashboard/stream", headers=bearer(issue()))
    assert operator.status == 200
    # Now every slot is taken: even an operator waits.
    refused = await client.get("/dashboard/stream", headers=bearer(issue()))
    await assert_problem(refused, 429)
    assert refused.headers["Retry-After"]
    operator.close()

    async def reserve_free() -> bool:
        return await _metric(client, "dashboard_streams_open") == 2

    await wait_for(reserve_free, within=5)
    # A token without metrics:read (anyone can register) does not reach the reserve.
    customer = await client.get("/dashboard/stream", headers=bearer(issue(())))
    await assert_problem(customer, 429)
    for response in anonymous:
        response.close()


async def test_anonymous_streams_are_capped_per_address(make_client: ClientFactory) -> None:
    client = await make_client(dashboard_public=True, dashboard_streams_per_client=1)
    first = await client.get("/dashboard/stream")
    assert first.status == 200
    # A forwarded address from an untrusted peer changes nothing.
    spoofed = await client.get("/dashboard/stream", headers={"X-Forwarded-For": "203.0.113.9"})
    await assert_problem(spoofed, 429)
    first.close()


async def test_behind_a_trusted_proxy_the_forwarded_client_is_capped(
    make_client: ClientFactory,
) -> None:
    client = await make_client(
        dashboard_public=True,
        dashboard_streams_per_client=1,
        dashboard_trusted_proxies=["127.0.0.0/8", "::1/128"],
    )
    alice = {"X-Forwarded-For": "198.51.100.7"}
    bob = {"X-Forwarded-For": "203.0.113.9, 198.51.100.8"}  # the rightmost hop counts
    first = await client.get("/dashboard/stream", headers=alice)
    second = await client.get("/dashboard/stream", headers=bob)
    assert (first.status, second.status) == (200, 200)
    await assert_problem(await client.get("/dashboard/stream", headers=alice), 429)
    other_left = {"X-Forwarded-For": "192.0.2.1, 198.51.100.8"}
    await assert_problem(await client.get("/dashboard/stream", headers=other_left), 429)
    first.close()
    second.close()

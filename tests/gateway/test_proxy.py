"""The reverse proxy against a real fake-upstream process: headers, bodies, failures, timeouts."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from yarl import URL

from core.testing import assert_problem
from tests.gateway.conftest import Client, FakeFactory, FakeUpstream, GatewayFactory

PUBLIC = "* /api/v1/products/**"


@pytest.fixture
async def fake(fake_upstream: FakeFactory) -> FakeUpstream:
    return await fake_upstream("a")


@pytest.fixture
async def gateway(fake: FakeUpstream, make_gateway: GatewayFactory) -> Client:
    return await make_gateway(
        upstream_products=fake.url, max_body_bytes=256 * 1024, public_routes=[PUBLIC]
    )


async def test_request_headers_are_forwarded_cleaned_and_completed(
    gateway: Client, fake: FakeUpstream
) -> None:
    response = await gateway.get(
        URL("/api/v1/products/a%2Fb?x=1&y=%2B", encoded=True),
        headers={
            "X-Correlation-ID": "corr-proxy-1",
            "X-Custom": "kept",
            "Connection": "keep-alive, X-Private",
            "X-Private": "hop",
            "Keep-Alive": "timeout=5",
            "X-Authenticated-User": "spoofed-admin",
            "X-Authenticated-Roles": "admin",
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=6.6.6.6",
        },
    )
    assert response.status == 200
    echo = await response.json()
    assert echo["path"] == "/api/v1/products/a%2Fb?x=1&y=%2B"  # bytes as the client sent them
    headers = echo["headers"]
    assert headers["x-custom"] == ["kept"]
    assert headers["x-correlation-id"] == ["corr-proxy-1"]
    assert headers["x-forwarded-for"] == ["127.0.0.1"]  # the spoofed chain is not believed
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == [f"127.0.0.1:{gateway.port}"]
    for gone in ("x-private", "keep-alive", "x-authenticated-user", "x-authenticated-roles"):
        assert gone not in headers, gone
    assert "forwarded" not in headers
    assert response.headers["X-Correlation-ID"] == "corr-proxy-1"


async def test_response_headers_drop_hop_by_hop_and_keep_the_rest(gateway: Client) -> None:
    response = await gateway.get("/api/v1/products/1")
    assert response.status == 200
    assert response.headers["Set-Cookie"] == "fake=a; Path=/"
    assert "X-Hop" not in response.headers  # named in the upstream's Connection header
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["RateLimit-Limit"] == "600"


async def test_no_cookie_jar_between_clients(gateway: Client) -> None:
    await gateway.get("/api/v1/products/1")
    gateway.session.cookie_jar.clear()
    echo = await (await gateway.get("/api/v1/products/2")).json()
    assert "cookie" not in echo["headers"]  # the gateway kept nothing from the first answer


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_large_download_streams_through(gateway: Client, chunked: bool) -> None:
    size = 3 * 1024 * 1024 + 17  # over max_body_bytes and buffer_bytes: it must stream
    query = "?chunked=1" if chunked else ""
    response = await gateway.get(f"/api/v1/products/bytes/{size}{query}")
    assert response.status == 200
    if not chunked:
        assert response.headers["Content-Length"] == str(size)
    received = 0
    async for chunk in response.content.iter_any():
        received += len(chunk)
    assert received == size


async def _chunks(total: int, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        block = b"y" * min(size, total - sent)
        sent += len(block)
        yield block


async def test_streamed_upload_under_the_limit_arrives_whole(gateway: Client) -> None:
    total = 200 * 1024  # above buffer_bytes (64 KiB), under max_body_bytes (256 KiB)
    response = await gateway.post("/api/v1/products/upload", data=_chunks(total))
    assert response.status == 200
    echo = await response.json()
    assert echo["body_size"] == total
    assert echo["body_sha256"] == hashlib.sha256(b"y" * total).hexdigest()


async def test_upload_over_the_limit_is_413_with_or_without_content_length(
    gateway: Client, fake: FakeUpstream
) -> None:
    chunked = await gateway.post("/api/v1/products/upload", data=_chunks(300 * 1024))
    await assert_problem(chunked, 413)
    declared = await gateway.post("/api/v1/products/upload", data=b"z" * (300 * 1024))
    await assert_problem(declared, 413)
    # The declared one never left the gateway.
    assert sum(1 for seen in await fake.seen() if seen["method"] == "POST") <= 1


async def test_dot_segments_and_unknown_paths(gateway: Client, fake: FakeUpstream) -> None:
    for raw in ("/api/v1/products/../users/me", "/api/v1/products/%2e%2e/users/me"):
        url = URL(f"http://127.0.0.1:{gateway.port}{raw}", encoded=True)
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            await assert_problem(response, 400)
    await assert_problem(await gateway.get("/api/v1/productsX"), 404)
    await assert_problem(await gateway.get("/nowhere"), 404)
    assert await fake.seen() == []


async def test_upstream_errors_pass_through_unchanged(gateway: Client) -> None:
    response = await gateway.get("/api/v1/products/status/409")
    assert response.status == 409
    assert (await response.json())["detail"] == "fake"


async def test_hanging_upstream_is_504_within_the_timeout(
    fake: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(upstream_products=fake.url, upstream_timeout=0.5)
    start = time.monotonic()
    response = await gateway.get("/api/v1/products/hang")
    elapsed = time.monotonic() - start
    body = await assert_problem(response, 504)
    assert 0.5 <= elapsed < 1.5, elapsed
    assert "products" in body["detail"]


async def test_request_timeout_bounds_every_attempt(
    fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    a, b = await fake_upstream("a"), await fake_upstream("b")
    gateway = await make_gateway(
        upstream_products=f"{a.url},{b.url}", upstream_timeout=5, request_timeout=0.4
    )
    start = time.monotonic()
    await assert_problem(await gateway.get("/api/v1/products/hang"), 504)
    assert time.monotonic() - start < 1.2


async def test_down_upstream_is_503_at_once(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway()  # every upstream on a closed port
    for path in ("/api/v1/products/1", "/api/v1/categories"):
        start = time.monotonic()
        body = await assert_problem(await gateway.get(path), 503)
        assert time.monotonic() - start < 0.5
        assert "No healthy instance of the products service" in body["detail"]
    # Orders is not served by anything yet: same answer, for a signed-in caller too.
    response = await gateway.get("/api/v1/orders", headers={"Authorization": "Bearer x"})
    assert response.status == 401  # the token is checked first, at the edge


async def test_upstream_dying_before_it_answers_is_502(gateway: Client) -> None:
    response = await gateway.post("/api/v1/products/drop", json={})
    await assert_problem(response, 502)


async def test_body_cut_midway_reaches_the_client_as_a_truncation(gateway: Client) -> None:
    response = await gateway.get("/api/v1/products/break-body")
    assert response.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()


async def test_client_leaving_mid_download_frees_the_instance(
    gateway: Client, fake: FakeUpstream
) -> None:
    response = await gateway.get("/api/v1/products/bytes/50000000")
    await response.content.read(1024)
    response.close()

    async def settled() -> bool:
        metrics = await (await gateway.get("/metrics")).text()
        return (
            'gateway_instance_outstanding{instance="products-0",upstream="products"} 0.0' in metrics
        )

    from core.testing import wait_for

    await wait_for(settled, within=5)
    assert (await gateway.get("/api/v1/products/1")).status == 200


async def test_head_and_no_content_keep_their_headers(gateway: Client) -> None:
    response = await gateway.head("/api/v1/products/bytes/1234")
    assert response.status == 200
    assert response.headers["Content-Length"] == "1234"
    assert await response.read() == b""


async def test_concurrent_requests_all_arrive(gateway: Client) -> None:
    responses = await asyncio.gather(*(gateway.get(f"/api/v1/products/{i}") for i in range(50)))
    paths = sorted([(await r.json())["path"] for r in responses])
    assert paths == sorted(f"/api/v1/products/{i}" for i in range(50))


async def test_an_upstream_stalling_mid_body_is_504_within_the_request_timeout(
    fake: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(
        upstream_products=fake.url, upstream_timeout=1, request_timeout=1.5
    )
    start = time.monotonic()
    body = await assert_problem(await gateway.get("/api/v1/products/stall-body"), 504)
    assert time.monotonic() - start < 2.5
    assert "products" in body["detail"]


async def _outstanding(gateway: Client) -> str:
    metrics = await (await gateway.get("/metrics")).text()
    lines = [
        line for line in metrics.splitlines() if line.startswith("gateway_instance_outstanding")
    ]
    return "\n".join(lines)


async def test_an_absolute_form_target_is_proxied_as_its_path_and_frees_its_slot(
    gateway: Client, fake: FakeUpstream
) -> None:
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(
            b"GET http://shop.example/api/v1/products/7?x=1 HTTP/1.1\r\n"
            b"Host: shop.example\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()
        writer.close()
        await writer.wait_closed()
        assert status_line.split()[1] == b"200", status_line
    assert [seen["path"] for seen in await fake.seen()] == ["/api/v1/products/7?x=1"] * 3
    outstanding = await _outstanding(gateway)
    assert 'instance="products-0",upstream="products"} 0.0' in outstanding, outstanding


async def test_oversized_uploads_are_the_clients_fault_not_the_instances(
    fake: FakeUpstream, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(
        upstream_products=fake.url, max_body_bytes=256 * 1024, public_routes=[PUBLIC], eject_after=2
    )
    for _ in range(4):  # twice the failures that would eject an instance
        await assert_problem(
            await gateway.post("/api/v1/products/upload", data=_chunks(300 * 1024)), 413
        )
    assert (await gateway.get("/api/v1/products/1")).status == 200  # the breaker stayed closed
    outstanding = await _outstanding(gateway)
    assert 'instance="products-0",upstream="products"} 0.0' in outstanding, outstanding

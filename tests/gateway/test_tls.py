"""``python -m gateway`` as a real process, over HTTPS with HSTS."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from core.testing import free_port, wait_for
from tests.certificates import self_signed
from tests.gateway.conftest import CLOSED, ROOT, Client, FakeFactory, FakeUpstream, GatewayFactory


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1, its key, and a client context trusting it
    (files are written and read here, outside the event loop)."""
    certfile, keyfile = self_signed(tmp_path)
    context = ssl.create_default_context(cafile=str(certfile))
    return certfile, keyfile, context


@pytest.fixture
async def https_gateway(
    certificate: tuple[Path, Path, ssl.SSLContext], fake_upstream: FakeFactory, redis_namespace: str
) -> AsyncIterator[tuple[str, FakeUpstream, ssl.SSLContext]]:
    fake = await fake_upstream("tls")
    certfile, keyfile, context = certificate
    port = free_port()
    env = {
        **os.environ,
        "AIOSHOP_ENV": "test",
        "REDIS_NAMESPACE": redis_namespace,
        "UPSTREAM_USERS": CLOSED,
        "UPSTREAM_PRODUCTS": fake.url,
        "UPSTREAM_ORDERS": CLOSED,
        "UPSTREAM_WEB": CLOSED,
        "RATE_LIMIT_NAMESPACE": f"{redis_namespace}.tls",
        "LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "--port",
        str(port),
        "--certfile",
        str(certfile),
        "--keyfile",
        str(keyfile),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"https://127.0.0.1:{port}"

    async def ready() -> bool:
        assert process.returncode is None, "the gateway exited"
        try:
            async with aiohttp.ClientSession() as session:
                response = await session.get(f"{url}/healthz", ssl=context)
                return response.status == 200
        except (aiohttp.ClientError, OSError):
            return False

    try:
        await wait_for(ready, within=20, interval=0.1)
        yield url, fake, context
    finally:
        if process.returncode is None:
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


async def test_https_with_hsts_and_forwarded_proto(
    https_gateway: tuple[str, FakeUpstream, ssl.SSLContext],
) -> None:
    url, _, context = https_gateway
    async with aiohttp.ClientSession() as session:
        health = await session.get(f"{url}/healthz", ssl=context)
        assert health.headers["Strict-Transport-Security"] == (
            "max-age=31536000; includeSubDomains"
        )
        proxied = await session.get(f"{url}/api/v1/products/1", ssl=context)
        assert proxied.status == 200
        assert proxied.headers["Strict-Transport-Security"].startswith("max-age=")
        assert (await proxied.json())["headers"]["x-forwarded-proto"] == ["https"]
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(f"{url}/healthz")  # not trusted without the test's CA


async def test_plain_http_has_no_hsts(make_gateway: GatewayFactory) -> None:
    gateway: Client = await make_gateway()
    response = await gateway.get("/healthz")
    assert "Strict-Transport-Security" not in response.headers

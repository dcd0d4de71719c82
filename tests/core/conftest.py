"""Fixtures of core's own tests: settings without a ``.env``, token codecs, isolated Redis keys."""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core import BaseServiceSettings, token_codec
from core.auth import TokenCodec

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
CLOSED_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connections are refused

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]
SettingsFactory = Callable[..., BaseServiceSettings]


@pytest.fixture
def namespace(redis_namespace: str) -> str:
    """A Redis namespace of this test alone, inside the session's namespace."""
    return f"{redis_namespace}.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_settings(namespace: str) -> SettingsFactory:
    """A factory of test settings; ``_env_file=None`` keeps a developer's ``.env`` out (and a
    blocking ``stat`` out of the event loop)."""

    def factory(**overrides: Any) -> BaseServiceSettings:
        values: dict[str, Any] = {"env": "test", "redis_namespace": namespace, **overrides}
        return BaseServiceSettings(_env_file=None, **values)  # type: ignore[call-arg]

    return factory


@pytest.fixture
def settings(make_settings: SettingsFactory) -> BaseServiceSettings:
    """Default test settings (development key pair, local Redis, this test's namespace)."""
    return make_settings()


@pytest.fixture
def signer(settings: BaseServiceSettings) -> TokenCodec:
    """A codec that can issue tokens the test apps accept."""
    return token_codec(settings, signing=True)


@pytest.fixture
async def redis(namespace: str) -> AsyncIterator[Redis]:
    """A client of the real Redis; every key of this test's namespace is deleted afterwards."""
    client = Redis.from_url(REDIS_URL)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{namespace}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()

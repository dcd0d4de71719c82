"""The aioshop command line, run as a real process against the test database."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator

import aiormq
import asyncpg
import pytest

from core.bus import Incoming, RetryPolicy
from core.bus.amqp import AmqpTransport
from core.testing import wait_for

CLI = [sys.executable, "-m", "services.cli"]
RETRY_MS = (50, 1000, 5000, 30000)  # this file's retry policy, and the default one


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def cli_env(users_dsn: str, products_dsn: str, redis_namespace: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        USERS_DATABASE_URL=users_dsn,
        PRODUCTS_DATABASE_URL=products_dsn,
        REDIS_NAMESPACE=redis_namespace,
        AIOSHOP_ENV="test",
        BCRYPT_ROUNDS="4",
        LOG_LEVEL="WARNING",
    )
    return env


@pytest.fixture
def email(users_dsn: str) -> Iterator[str]:
    address = f"admin-{uuid.uuid4().hex[:10]}@example.com"
    yield address
    asyncio.run(_delete(users_dsn, address))


async def _delete(dsn: str, address: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM users WHERE email = $1", address)
    finally:
        await conn.close()


def _roles(dsn: str, address: str) -> list[str] | None:
    async def fetch() -> list[str] | None:
        conn = await asyncpg.connect(dsn)
        try:
            roles = await conn.fetchval("SELECT roles FROM users WHERE email = $1", address)
            return sorted(roles) if roles is not None else None
        finally:
            await conn.close()

    return asyncio.run(fetch())


def _run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [*CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


def test_migrate_unknown_service_is_an_error(cli_env: dict[str, str]) -> None:
    result = _run(["migrate", "nope"], cli_env)
    assert result.returncode == 2
    assert "unknown service" in result.stderr


def test_create_admin_from_env_then_grants_existing(
    cli_env: dict[str, str], users_dsn: str, email: str
) -> None:
    env = {**cli_env, "ADMIN_PW": "a-long-admin-password"}
    result = _run(["create-admin", email.upper(), "--password-env", "ADMIN_PW"], env)
    assert result.returncode == 0, result.stderr
    assert _roles(users_dsn, email) == ["admin", "customer"]
    # Again (password from stdin this time): idempotent, still one admin account.
    result = _run(["create-admin", email], cli_env, stdin="another-long-password\n")
    assert result.returncode == 0, result.stderr
    assert _roles(users_dsn, email) == ["admin", "customer"]


def test_create_admin_rejects_a_short_password(
    cli_env: dict[str, str], users_dsn: str, email: str
) -> None:
    result = _run(["create-admin", email], cli_env, stdin="short\n")
    assert result.returncode == 2
    assert "invalid input" in result.stderr
    assert _roles(users_dsn, email) is None


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310
            return int(resp.status)
    except OSError:
        return 0


def test_up_starts_every_service_and_stops_on_ctrl_c(cli_env: dict[str, str]) -> None:
    port, products_port = _free_port(), _free_port()
    products_queue = f"test-up-products-{uuid.uuid4().hex[:8]}"
    env = {
        **cli_env,
        "USERS_PORT": str(port),
        "PRODUCTS_PORT": str(products_port),
        "PRODUCTS_BUS_QUEUE": products_queue,
    }
    proc = subprocess.Popen(  # noqa: S603
        [*CLI, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        output = "".join(lines)
        assert f"http://127.0.0.1:{port}" in output, output
        assert f"http://127.0.0.1:{products_port}" in output, output
        assert _get(f"http://127.0.0.1:{port}/readyz") == 200
        assert _get(f"http://127.0.0.1:{products_port}/readyz") == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert _get(f"http://127.0.0.1:{port}/healthz") == 0  # the child is gone too
        assert _get(f"http://127.0.0.1:{products_port}/healthz") == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        asyncio.run(_delete_queues(products_queue))


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "AIOSHOP_ENV": "test"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_bus_parked_lists_and_replay_redelivers() -> None:
    queue, key = f"test-cli-{uuid.uuid4().hex[:8]}", f"cli.{uuid.uuid4().hex[:8]}"
    transport = AmqpTransport("amqp://guest:guest@127.0.0.1:5672/")
    received: list[Incoming] = []
    healthy = False

    async def handle(message: Incoming) -> None:
        received.append(message)
        if not healthy:
            raise RuntimeError("not yet")

    await transport.start()
    try:
        await transport.consume(queue, [key], handle, retry=RetryPolicy((0.05,)))
        await transport.publish(key, b'{"n": 1}', message_id="cli-message-1")
        await wait_for(lambda: transport.parked(queue), within=10)

        code, out, err = await _cli("bus", "parked", queue, "-v")
        assert code == 0, err
        assert "cli-message-1" in out
        assert '{"n": 1}' in out
        assert "1 parked message(s)" in err

        healthy = True
        code, out, err = await _cli("bus", "replay", queue)
        assert code == 0, err
        assert "replayed 1 message(s)" in out

        async def redelivered() -> bool:
            return len(received) == 3 and received[-1].attempt == 1

        await wait_for(redelivered, within=10)
        assert await transport.parked(queue) == []
    finally:
        await transport.stop()
        await _delete_queues(queue)


async def _delete_queues(queue: str) -> None:
    connection = await aiormq.connect("amqp://guest:guest@127.0.0.1:5672/")
    try:
        channel = await connection.channel()
        for name in (queue, f"{queue}.parked", *(f"{queue}.retry.{ms}" for ms in RETRY_MS)):
            await channel.queue_delete(name)
    finally:
        await connection.close()

"""Whole systems for tests: an ``aioshop up`` of real processes, isolated from every other run.

Each system gets the databases it is given, its own ports, exchange, queues and Redis namespace,
small connection pools, and no event archive unless the test names the archive's database (the
default one belongs to nobody's test). ``stop`` ends it as Ctrl-C would and deletes what it
declared on the broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiormq

from core.bus import RetryPolicy
from core.bus.amqp import delay_queue_name, parking_queue_name
from core.testing import free_port
from services import registry

__all__ = ["AMQP_URL", "CLI", "Launch", "delete_topology", "isolated_environment"]

CLI = [sys.executable, "-m", "services.cli"]
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass
class Launch:
    """The environment of one system, then its process once ``start`` ran."""

    env: dict[str, str]
    exchange: str
    queues: list[str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def gateway(self) -> str:
        """The gateway's base URL."""
        return f"http://127.0.0.1:{self.env['GATEWAY_PORT']}"

    def start(self, arguments: list[str], data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
        """``aioshop up --no-migrate ARGUMENTS --data-dir DATA_DIR``, its output into ``log``."""
        with log.open("wb") as output:
            self.process = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
                [*CLI, "up", "--no-migrate", *arguments, "--data-dir", str(data_dir)],
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        return self.process

    def stop(self) -> None:
        """Stop it as Ctrl-C does (killed after 40 s)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    async def delete_topology(self) -> None:
        """Delete its queues (and their delay and parking queues) and its exchange."""
        await delete_topology(self.exchange, self.queues)


def isolated_environment(
    dsns: Mapping[str, str],
    *,
    label: str,
    redis_namespace: str,
    pool_size: int = 3,
    extra: Mapping[str, str] | None = None,
) -> Launch:
    """The environment of a system on ``dsns`` (service -> database URL) that shares nothing
    with another: ``label`` names its exchange, queues and namespace; ``extra`` is set last."""
    suffix = uuid.uuid4().hex[:8]
    queues = {name: f"test-{label}-{name}-{suffix}" for name in registry.SERVICES}
    exchange = f"test-{label}-{suffix}.events"
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_PORT", "_DATABASE_URL"))}
    env.update(
        {
            **{f"{name.upper()}_DATABASE_URL": dsn for name, dsn in dsns.items()},
            **{f"{name.upper()}_PORT": str(free_port()) for name in (*registry.SERVICES, "web")},
            **{f"{name.upper()}_BUS_QUEUE": queue for name, queue in queues.items()},
            "ARCHIVE_ENABLED": "false",
            "GATEWAY_PORT": str(free_port()),
            "BUS_EXCHANGE": exchange,
            "REDIS_NAMESPACE": f"{redis_namespace}.{label}-{suffix}",
            "AIOSHOP_ENV": "test",
            "BCRYPT_ROUNDS": "4",
            "LOG_LEVEL": "WARNING",
            "DB_POOL_MAX_SIZE": str(pool_size),
            "DB_POOL_MIN_SIZE": "1",
            **(extra or {}),
        }
    )
    return Launch(env, exchange, list(queues.values()))


async def delete_topology(exchange: str, queues: list[str]) -> None:
    """Delete ``queues`` with their delay and parking queues, and ``exchange``."""
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        for queue in queues:
            names = [queue, parking_queue_name(queue)]
            names += [delay_queue_name(queue, delay) for delay in RetryPolicy().delays]
            for name in names:
                await channel.queue_delete(name)
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()

"""Writing a backup: each service database with ``pg_dump --format=custom``, one after another,
then the broker's definitions, then the manifest.

Each dump is consistent on its own: ``pg_dump`` reads its whole database in one snapshot while
the services keep writing. The databases are dumped one after another, so they are snapshots of
slightly different moments; across databases the system is consistent through its events (the
outbox and inbox of every service), not through the backup: see docs/operations.md.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from core.urls import censor_url
from services.backup.broker import export_definitions
from services.backup.manifest import (
    BrokerRecord,
    DumpRecord,
    Manifest,
    create_directory,
    open_private,
    sha256_of,
    write_manifest,
)
from services.backup.postgres import (
    BackupError,
    client_version,
    database_name,
    libpq,
    run_tool,
    server_facts,
)

__all__ = ["BROKER_FILE", "Target", "backup", "server_of"]

BROKER_FILE = "broker-definitions.json"


@dataclass(frozen=True, slots=True)
class Target:
    """A service database to back up or restore: the service and its database URL."""

    service: str
    dsn: str


def server_of(dsn: str) -> str:
    """``host:port`` of a database URL (no user, no password)."""
    parts = urlsplit(dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _seal(path: Path, fd: int) -> tuple[str, int]:
    """Flush a written file to disk, close it, and return its SHA-256 and size."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return sha256_of(path)


async def _dump(directory: Path, target: Target, pg_dump: str, tool_timeout: float) -> DumpRecord:
    started_at, started = _now(), time.monotonic()
    try:
        server_version, revision = await server_facts(target.dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BackupError(
            f"{target.service}: cannot read {censor_url(target.dsn)}: {exc.__class__.__name__} "
            f"{exc}".strip()
        ) from exc
    name = f"{target.service}.dump"
    path = directory / name
    connection = libpq(target.dsn)
    fd = await asyncio.to_thread(open_private, path)
    try:
        await run_tool(
            "pg_dump",
            ["--format=custom", "--no-password", f"--dbname={connection.uri}"],
            env=connection.env,
            stdout=fd,
            tool_timeout=tool_timeout,
        )
    except BackupError as exc:
        os.close(fd)
        raise BackupError(f"{target.service}: {exc}") from exc
    digest, size = await asyncio.to_thread(_seal, path, fd)
    return DumpRecord(
        name=name,
        service=target.service,
        database=database_name(target.dsn),
        server=server_of(target.dsn),
        sha256=digest,
        size=size,
        pg_dump_version=pg_dump,
        server_version=server_version,
        alembic_revision=revision,
        started_at=started_at,
        seconds=round(time.monotonic() - started, 3),
    )


def _write_private(path: Path, body: bytes) -> tuple[str, int]:
    fd = open_private(path)
    with os.fdopen(fd, "wb") as file:
        file.write(body)
        file.flush()
        os.fsync(file.fileno())
    return sha256_of(path)


async def _broker(
    directory: Path, amqp_url: str, management_url: str | None, tool_timeout: float
) -> BrokerRecord:
    definitions = await export_definitions(
        amqp_url, management_url, tool_timeout=min(tool_timeout, 60)
    )
    if definitions.body is None:
        return BrokerRecord(backed_up=False, reason=definitions.reason)
    digest, size = await asyncio.to_thread(
        _write_private, directory / BROKER_FILE, definitions.body
    )
    return BrokerRecord(
        backed_up=True, source=definitions.source, name=BROKER_FILE, sha256=digest, size=size
    )


async def backup(
    directory: Path,
    targets: Sequence[Target],
    *,
    amqp_url: str | None,
    management_url: str | None = None,
    version: str = "unknown",
    tool_timeout: float = 3600.0,
) -> Manifest:
    """Back up every ``targets`` database and (unless ``amqp_url`` is ``None``) the broker's
    definitions into the new ``0700`` directory ``directory``; the manifest, written last.

    ``BackupError`` if a database cannot be dumped: the directory is then left without a
    manifest, which ``restore`` refuses.
    """
    created_at = _now()
    await asyncio.to_thread(create_directory, directory)
    pg_dump = await client_version("pg_dump")
    dumps = [await _dump(directory, target, pg_dump, tool_timeout) for target in targets]
    if amqp_url is None:
        broker = BrokerRecord(backed_up=False, reason="not asked for (no broker configured)")
    else:
        broker = await _broker(directory, amqp_url, management_url, tool_timeout)
    manifest = Manifest(
        created_at=created_at,
        finished_at=_now(),
        aioshop_version=version,
        dumps=dumps,
        broker=broker,
        notes=[
            "each dump is one consistent snapshot of its database; the databases were dumped "
            "one after another, in the order listed",
        ],
    )
    await asyncio.to_thread(write_manifest, directory, manifest)
    return manifest

"""Restoring a backup: check every file against the manifest, check every target database, then
``pg_restore`` each dump into its service's database.

Nothing is touched until every check passed: a missing or altered file, or a target database
that holds anything (see ``Contents.empty``) when ``force`` is not given, refuses the whole
restore. With ``force`` a non-empty database is dropped and created again, rather than restored
over with ``pg_restore --clean``: ``--clean`` drops only what the dump holds, so tables or
columns added after the backup (a newer migration) would survive beside the restored ones, and
the result would be neither the backup nor the database it replaced.

Each dump is restored in one transaction (``--single-transaction --exit-on-error``): a restore
that fails leaves its database as empty as it found it. Objects are owned by the user of the
service's URL (``--no-owner``), as if ``aioshop migrate`` had created them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import asyncpg

from core.migrate import create_database, drop_database
from core.urls import censor_url
from services.backup.dump import Target
from services.backup.manifest import Manifest, read_manifest, verify
from services.backup.postgres import (
    BackupError,
    Contents,
    contents,
    database_name,
    exists,
    libpq,
    run_tool,
    server_facts,
)

__all__ = ["Refused", "Restored", "restore"]


class Refused(BackupError):
    """The restore was refused before anything changed: ``lines`` say why, one per problem."""

    def __init__(self, summary: str, lines: Sequence[str]) -> None:
        super().__init__(summary)
        self.lines = list(lines)


@dataclass(frozen=True, slots=True)
class Restored:
    """What the restore did to one service's database."""

    service: str
    database: str
    action: str  # "created", "restored into the empty database", "replaced (...)"
    contents: Contents
    alembic_revision: str | None
    seconds: float


async def _state(target: Target) -> Contents | None:
    """What the target database holds, or ``None`` if it does not exist."""
    try:
        if not await exists(target.dsn):
            return None
        return await contents(target.dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BackupError(
            f"{target.service}: cannot read {censor_url(target.dsn)}: {exc.__class__.__name__} "
            f"{exc}".strip()
        ) from exc


async def _restore_one(
    directory: Path, manifest: Manifest, target: Target, state: Contents | None, tool_timeout: float
) -> Restored:
    started = time.monotonic()
    dump = manifest.dump_of(target.service)
    assert dump is not None  # checked by restore()
    if state is None:
        await create_database(target.dsn)
        action = "created"
    elif state.empty:
        action = "restored into the empty database"
    else:
        await drop_database(target.dsn)
        await create_database(target.dsn)
        action = f"replaced (it held {state.describe()})"
    connection = libpq(target.dsn)
    try:
        await run_tool(
            "pg_restore",
            [
                "--no-owner",
                "--single-transaction",
                "--exit-on-error",
                "--no-password",
                f"--dbname={connection.uri}",
                str(directory / dump.name),
            ],
            env=connection.env,
            tool_timeout=tool_timeout,
        )
    except BackupError as exc:
        raise BackupError(f"{target.service}: {exc}") from exc
    _, revision = await server_facts(target.dsn)
    return Restored(
        service=target.service,
        database=database_name(target.dsn),
        action=action,
        contents=await contents(target.dsn),
        alembic_revision=revision,
        seconds=time.monotonic() - started,
    )


def _database_key(dsn: str) -> tuple[str, int, str]:
    """The server and database a URL names, to tell when two URLs name the same database."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    host = parts.hostname or query.get("host", "")
    return host, parts.port or int(query.get("port", 5432)), database_name(dsn)


def shared_databases(targets: Sequence[Target], services: Sequence[Target]) -> list[str]:
    """A line for each of ``targets`` whose database is also another of ``services``'s: a
    restore into it would replace that service's data too (one ``DATABASE_URL`` for all)."""
    lines = []
    for target in targets:
        others = [
            other.service
            for other in services
            if other.service != target.service
            and _database_key(other.dsn) == _database_key(target.dsn)
        ]
        if others:
            lines.append(
                f"{target.service}: {database_name(target.dsn)} is also the database of "
                f"{', '.join(others)}"
            )
    return lines


async def restore(
    directory: Path,
    targets: Sequence[Target],
    *,
    force: bool = False,
    tool_timeout: float = 3600.0,
    services: Sequence[Target] = (),
) -> tuple[Manifest, list[Restored]]:
    """Restore the dumps of ``targets``' services from the backup in ``directory`` into the
    targets' databases (created if missing); the manifest and what was done.

    ``Refused`` (nothing changed) if a file is missing or altered, a service has no dump in the
    backup, a target database is also another service's (of ``targets`` or ``services``, every
    service's database), or a target database is not empty and ``force`` is false;
    ``BackupError`` if a ``pg_restore`` fails (its database is left empty: one transaction).
    """
    shared = shared_databases(targets, [*targets, *services])
    if shared:
        raise Refused(
            "services share a database: restoring one would replace the others' data "
            "(give each service its own database URL)",
            shared,
        )
    manifest = await asyncio.to_thread(read_manifest, directory)
    missing = [t.service for t in targets if manifest.dump_of(t.service) is None]
    if missing:
        raise Refused(
            "the backup does not hold every database asked for",
            [f"{service}: no dump in {directory}" for service in missing],
        )
    files = [
        (d.name, d.sha256, d.size)
        for d in manifest.dumps
        if d.service in {t.service for t in targets}
    ]
    problems = await asyncio.to_thread(verify, directory, files)
    if problems:
        raise Refused("the backup does not match its manifest: refusing to restore it", problems)
    states = [await _state(target) for target in targets]
    occupied = [
        f"{t.service}: {database_name(t.dsn)} holds {state.describe()}"
        for t, state in zip(targets, states, strict=True)
        if state is not None and not state.empty
    ]
    if occupied and not force:
        raise Refused(
            "not restoring over databases that are not empty (--force drops and recreates them)",
            occupied,
        )
    done = [
        await _restore_one(directory, manifest, target, state, tool_timeout)
        for target, state in zip(targets, states, strict=True)
    ]
    return manifest, done

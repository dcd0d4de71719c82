"""``aioshop backup`` and ``aioshop restore``: the commands over ``services.backup``.

Each service's database is the one its settings name (``USERS_DATABASE_URL``...), for a backup
as for a restore: a backup can be restored under other database names by setting those. What is
printed never holds a password (``censor_url``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from services import registry
from services.backup import BackupError, BackupSettings, Refused, Target, backup, restore
from services.backup.dump import server_of
from services.cli.admin import database_url

__all__ = ["cmd_backup", "cmd_restore", "default_directory", "targets"]


def _version() -> str:
    try:
        return importlib.metadata.version("aioshop")
    except importlib.metadata.PackageNotFoundError:  # a checkout that is not installed
        return "unknown"


def default_directory(now: datetime | None = None) -> Path:
    """``backups/<UTC time>``: ``backups/20261204T140500Z``."""
    moment = now or datetime.now(UTC)
    return Path("backups") / moment.strftime("%Y%m%dT%H%M%SZ")


def targets(services: Sequence[str]) -> list[Target]:
    """The database of each of ``services``, from its settings."""
    return [Target(name, database_url(registry.get(name).settings())) for name in services]


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover: the loop returns


def cmd_backup(args: argparse.Namespace) -> int:
    """Dump every service database and the broker's definitions into a new directory."""
    directory = Path(args.dir) if args.dir else default_directory()
    settings = BackupSettings()
    services = [name for name, entry in registry.SERVICES.items() if entry.migrated]
    started = time.monotonic()
    try:
        manifest = asyncio.run(
            backup(
                directory,
                targets(services),
                amqp_url=settings.amqp_url if settings.bus_transport == "amqp" else None,
                management_url=settings.rabbitmq_management_url,
                version=_version(),
                tool_timeout=settings.tool_timeout,
            )
        )
    except BackupError as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        if directory.is_dir() and not (directory / "manifest.json").exists():
            print(f"{directory} is incomplete (no manifest): delete it", file=sys.stderr)
        return 1
    print(f"backup written to {directory} in {time.monotonic() - started:.1f} s")
    for dump in manifest.dumps:
        print(
            f"  {dump.service:<9} {dump.database} on {dump.server}  "
            f"revision {dump.alembic_revision or '-'}  {_size(dump.size)}  {dump.seconds:.1f} s"
        )
    broker = manifest.broker
    if broker.backed_up:
        print(f"  broker    definitions from {broker.source}  {_size(broker.size or 0)}")
    else:
        print(f"  broker    definitions NOT backed up: {broker.reason}")
    print(f"manifest: {directory / 'manifest.json'} (sha256 of every file)")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Check a backup against its manifest, then restore its databases."""
    unknown = sorted(set(args.services) - set(registry.SERVICES))
    if unknown:
        print(f"unknown service(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    directory = Path(args.dir)
    settings = BackupSettings()
    try:
        if args.services:
            services = list(dict.fromkeys(args.services))
        else:
            from services.backup import read_manifest

            services = [d.service for d in read_manifest(directory).dumps]
        chosen = targets(services)
        started = time.monotonic()
        manifest, done = asyncio.run(
            restore(
                directory,
                chosen,
                force=args.force,
                tool_timeout=settings.tool_timeout,
                services=targets(list(registry.SERVICES)),
            )
        )
    except Refused as exc:
        print(f"restore refused: {exc}", file=sys.stderr)
        for line in exc.lines:
            print(f"  {line}", file=sys.stderr)
        return 1
    except BackupError as exc:
        print(f"restore failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"restored {len(done)} database(s) from {directory} (backup of {manifest.created_at}) "
        f"in {time.monotonic() - started:.1f} s"
    )
    by_service = {t.service: t for t in chosen}
    for item in done:
        print(
            f"  {item.service:<9} {item.database} on {server_of(by_service[item.service].dsn)}: "
            f"{item.action}; now {item.contents.describe()}, revision "
            f"{item.alembic_revision or '-'}  {item.seconds:.1f} s"
        )
    if manifest.broker.backed_up:
        print(
            f"broker definitions were not touched: if the broker lost them, import "
            f"{directory / str(manifest.broker.name)} (rabbitmqctl import_definitions FILE, or "
            "POST /api/definitions); the services declare their own exchange and queues on start"
        )
    print(
        "next: `aioshop migrate` (a backup of an older revision), `aioshop orders "
        "rebuild-read-model` if orders was restored, then start the services; "
        "docs/operations.md says what a restore loses"
    )
    return 0

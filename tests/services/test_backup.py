"""``aioshop backup`` and ``aioshop restore`` on the real PostgreSQL, with databases of their own.

Each test points every service at new databases (``*_DATABASE_URL``), migrated and given some
rows, and drops them at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from blockbuster import BlockBuster

import migrations
from core.migrate import drop_database
from core.testing.plugin import scratch_database_url
from services import registry
from services.backup.broker import management_url
from services.backup.manifest import read_manifest
from services.backup.postgres import libpq
from services.cli import main

SERVICES = tuple(registry.SERVICES)


async def _fill(dsns: dict[str, str]) -> None:
    """Rows in every database: a category and a product, an order's event, a user."""
    conn = await asyncpg.connect(dsns["products"])
    try:
        category = await conn.fetchval(
            "INSERT INTO categories (id, name, slug) VALUES ($1, 'Lamps', 'lamps') RETURNING id",
            uuid.uuid4(),
        )
        await conn.execute(
            "INSERT INTO products (id, sku, name, price_cents, category_id) "
            "VALUES ($1, 'L-1', 'Desk lamp', 1999, $2)",
            uuid.uuid4(),
            category,
        )
    finally:
        await conn.close()
    conn = await asyncpg.connect(dsns["orders"])
    try:
        await conn.execute(
            "INSERT INTO order_events (order_id, seq, type, data) "
            "VALUES ($1, 1, 'order.placed', '{\"total_cents\": 1999}')",
            uuid.uuid4(),
        )
    finally:
        await conn.close()
    conn = await asyncpg.connect(dsns["users"])
    try:
        await conn.execute(
            "INSERT INTO users (id, email, password_hash, full_name) "
            "VALUES ($1, 'alice@example.com', 'not-a-real-hash', 'Alice')",
            uuid.uuid4(),
        )
    finally:
        await conn.close()


async def _snapshot(dsn: str) -> dict[str, list[str]]:
    """Every user table's rows, as sorted text: equal snapshots, equal data."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        found = {}
        for row in tables:
            name = row["tablename"]
            rows = await conn.fetch(f'SELECT t::text AS line FROM "{name}" t')
            found[name] = sorted(r["line"] for r in rows)
        return found
    finally:
        await conn.close()


def _snapshots(dsns: dict[str, str]) -> dict[str, dict[str, list[str]]]:
    return {name: asyncio.run(_snapshot(dsn)) for name, dsn in dsns.items()}


def _drop(dsns: dict[str, str]) -> None:
    for dsn in dsns.values():
        asyncio.run(drop_database(dsn))


async def _exists(dsn: str) -> bool:
    server = scratch_database_url("postgres")
    name = dsn.rsplit("/", 1)[1]
    conn = await asyncpg.connect(server)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


@pytest.fixture
def dsns(monkeypatch: pytest.MonkeyPatch, blockbuster: BlockBuster) -> Iterator[dict[str, str]]:
    """Every service on a new, migrated database holding a few rows (dropped afterwards); the
    in-memory bus, so that only the test of the broker's definitions asks the broker."""
    suffix = uuid.uuid4().hex[:8]
    found = {name: scratch_database_url(f"test_backup_{name}_{suffix}") for name in SERVICES}
    for name, dsn in found.items():
        monkeypatch.setenv(f"{name.upper()}_DATABASE_URL", dsn)
    monkeypatch.setenv("BUS_TRANSPORT", "memory")
    try:
        blockbuster.deactivate()  # Alembic reads its scripts inside its own event loop
        try:
            for name, dsn in found.items():
                migrations.upgrade(name, dsn)
        finally:
            blockbuster.activate()
        asyncio.run(_fill(found))
        yield found
    finally:
        _drop(found)


@pytest.fixture
def backup_dir(tmp_path: Path, dsns: dict[str, str]) -> Path:
    """A backup of ``dsns`` made by ``aioshop backup``."""
    directory = tmp_path / "backups" / "one"
    assert main(["backup", "--dir", str(directory)]) == 0
    return directory


def test_round_trip_restores_the_same_rows(
    dsns: dict[str, str], backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshots(dsns)
    assert before["products"]["products"], "the fixture wrote rows"
    _drop(dsns)

    assert main(["restore", str(backup_dir)]) == 0

    assert _snapshots(dsns) == before
    out = capsys.readouterr().out
    assert "restored 3 database(s)" in out
    for name in SERVICES:
        assert f"{name}" in out


def test_backup_files_are_private(backup_dir: Path) -> None:
    assert stat.S_IMODE(backup_dir.stat().st_mode) == 0o700
    files = list(backup_dir.iterdir())
    assert {f.name for f in files} >= {"manifest.json", *(f"{name}.dump" for name in SERVICES)}
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name


def test_manifest_describes_every_dump(dsns: dict[str, str], backup_dir: Path) -> None:
    data: dict[str, Any] = json.loads((backup_dir / "manifest.json").read_text())
    assert data["format"] == 1
    assert datetime.fromisoformat(data["created_at"]) <= datetime.fromisoformat(data["finished_at"])
    assert data["aioshop_version"]
    assert [d["service"] for d in data["dumps"]] == list(SERVICES)
    for dump in data["dumps"]:
        content = (backup_dir / dump["name"]).read_bytes()
        assert content.startswith(b"PGDMP"), "pg_dump's custom format"
        assert dump["sha256"] == hashlib.sha256(content).hexdigest()
        assert dump["size"] == len(content)
        assert dump["database"] == dsns[dump["service"]].rsplit("/", 1)[1]
        assert dump["server"] == "127.0.0.1:5432"
        assert dump["pg_dump_version"].startswith("pg_dump (PostgreSQL) ")
        assert dump["server_version"]
        assert dump["alembic_revision"] == _head(dump["service"])
    # BUS_TRANSPORT=memory: no broker to back up, and the manifest says so.
    assert data["broker"]["backed_up"] is False
    assert data["broker"]["reason"]


def _head(service: str) -> str:
    """The newest revision of ``service``'s migrations, as the repository holds them."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent / service))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def test_broker_definitions_are_backed_up_or_the_manifest_says_why(
    dsns: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUS_TRANSPORT", "amqp")
    directory = tmp_path / "with-broker"
    assert main(["backup", "--dir", str(directory)]) == 0
    broker = read_manifest(directory).broker
    if broker.backed_up:
        assert broker.name is not None
        content = (directory / broker.name).read_bytes()
        assert hashlib.sha256(content).hexdigest() == broker.sha256
        assert "rabbit_version" in json.loads(content)
        assert broker.source in ("management-api", "rabbitmqctl")
    else:  # no management API and no local rabbitmqctl: both reasons are recorded
        assert broker.reason is not None
        assert "management API" in broker.reason
        assert "rabbitmqctl" in broker.reason


def test_a_tampered_dump_is_refused_and_nothing_changes(
    dsns: dict[str, str], backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = backup_dir / "orders.dump"
    content = bytearray(dump.read_bytes())
    content[-1] ^= 0xFF  # same size, another checksum
    dump.write_bytes(bytes(content))
    _drop(dsns)

    assert main(["restore", str(backup_dir)]) == 1

    err = capsys.readouterr().err
    assert "does not match its manifest" in err
    assert "orders.dump: SHA-256" in err
    assert not any(asyncio.run(_exists(dsn)) for dsn in dsns.values()), "nothing was created"


def test_a_missing_dump_is_refused(
    dsns: dict[str, str], backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (backup_dir / "users.dump").unlink()
    _drop(dsns)
    assert main(["restore", str(backup_dir)]) == 1
    assert "users.dump: missing" in capsys.readouterr().err


def test_a_backup_without_manifest_is_refused(
    dsns: dict[str, str], backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (backup_dir / "manifest.json").unlink()
    assert main(["restore", str(backup_dir)]) == 1
    assert "did not finish" in capsys.readouterr().err


def test_a_non_empty_database_needs_force(
    dsns: dict[str, str], backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backed_up = _snapshots(dsns)
    asyncio.run(_add_order_event(dsns["orders"]))
    changed = _snapshots(dsns)

    assert main(["restore", str(backup_dir), "orders"]) == 1
    err = capsys.readouterr().err
    assert "not empty" in err
    assert "holds 8 table(s) with 3 row(s)" in err
    assert _snapshots(dsns) == changed, "a refused restore changes nothing"

    assert main(["restore", str(backup_dir), "orders", "--force"]) == 0
    assert "replaced (it held" in capsys.readouterr().out
    assert _snapshots(dsns) == backed_up


def test_a_database_two_services_share_is_never_restored_over(
    dsns: dict[str, str],
    backup_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One database for every service (products' URL given to orders too): restoring orders
    with --force would drop products' data with it."""
    before = _snapshots(dsns)
    monkeypatch.setenv("ORDERS_DATABASE_URL", dsns["products"])

    assert main(["restore", str(backup_dir), "orders", "--force"]) == 1
    err = capsys.readouterr().err
    assert "services share a database" in err
    assert f"orders: {dsns['products'].rsplit('/', 1)[1]} is also the database of products" in err
    assert _snapshots(dsns) == before, "a refused restore changes nothing"


def test_a_migrated_but_empty_database_is_not_empty(
    dsns: dict[str, str],
    backup_dir: Path,
    blockbuster: BlockBuster,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What `aioshop up` leaves after the data was lost: tables, no rows. pg_restore would collide
    with every table, so it too needs --force."""
    backed_up = _snapshots(dsns)
    asyncio.run(drop_database(dsns["users"]))
    blockbuster.deactivate()
    try:
        migrations.upgrade("users", dsns["users"])
    finally:
        blockbuster.activate()

    assert main(["restore", str(backup_dir), "users"]) == 1
    assert "users: test_backup_users" in capsys.readouterr().err
    assert main(["restore", str(backup_dir), "users", "--force"]) == 0
    assert _snapshots(dsns) == backed_up


def test_restore_of_an_unknown_service_is_a_usage_error(
    backup_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["restore", str(backup_dir), "payments"]) == 2
    assert "unknown service(s): payments" in capsys.readouterr().err


def test_backup_never_writes_into_a_directory_with_files(
    dsns: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["backup", "--dir", str(tmp_path)]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


async def _add_order_event(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO order_events (order_id, seq, type, data) "
            "VALUES ($1, 1, 'order.placed', '{}')",
            uuid.uuid4(),
        )
    finally:
        await conn.close()


@pytest.mark.unit
def test_the_password_goes_to_the_environment_never_the_command_line() -> None:
    connection = libpq("postgresql://shop:s3cr%40t@db.internal:6432/aioshop_orders?sslmode=require")
    assert connection.uri == "postgresql://shop@db.internal:6432/aioshop_orders?sslmode=require"
    assert connection.env == {"PGPASSWORD": "s3cr@t"}
    in_query = libpq("postgresql://shop@db/orders?password=p%26w&server_settings=x")
    assert in_query.uri == "postgresql://shop@db/orders"
    assert in_query.env == {"PGPASSWORD": "p&w"}
    assert libpq("postgresql://postgres@127.0.0.1/x").env == {}


@pytest.mark.unit
def test_the_management_url_defaults_to_the_amqp_host_and_credentials() -> None:
    assert management_url("amqp://guest:guest@127.0.0.1:5672/", None) == (
        "http://guest:guest@127.0.0.1:15672"
    )
    assert management_url("amqp://bus.internal/", None) == "http://bus.internal:15672"
    assert management_url("amqp://a:b@x/", "https://ops:pw@mq.example/") == (
        "https://ops:pw@mq.example"
    )

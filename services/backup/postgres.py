"""PostgreSQL for backups: libpq connection arguments without the password on the command line,
the client tools' versions, and what a database holds (is it empty, its Alembic revision).

``pg_dump`` and ``pg_restore`` get the database as a libpq URI with the password removed; the
password goes into ``PGPASSWORD`` of the child's environment only, so it never shows in ``ps``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

__all__ = [
    "BackupError",
    "Contents",
    "Libpq",
    "client_version",
    "contents",
    "database_name",
    "exists",
    "libpq",
    "run_tool",
    "server_facts",
]

# asyncpg's URL parameters that libpq does not know; libpq refuses unknown ones.
_ASYNCPG_ONLY = {"server_settings", "command_timeout", "min_size", "max_size"}
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


class BackupError(Exception):
    """A backup or restore could not be done: ``str(exc)`` is the one line that says why."""


@dataclass(frozen=True, slots=True)
class Libpq:
    """How a PostgreSQL client tool reaches a database: a URI without password, and the
    environment variables (``PGPASSWORD``) that carry the rest."""

    uri: str
    env: dict[str, str]


def database_name(dsn: str) -> str:
    """The database a ``postgresql://`` URL names."""
    name = unquote(urlsplit(dsn).path.lstrip("/"))
    if not name:
        raise BackupError("the database URL names no database")
    return name


def libpq(dsn: str) -> Libpq:
    """The URI and environment for ``pg_dump``/``pg_restore``: the password (from the URL's user
    info or its ``password`` parameter) moves to ``PGPASSWORD``."""
    parts = urlsplit(dsn)
    password = unquote(parts.password) if parts.password is not None else None
    query = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "password":
            password = value
        elif key not in _ASYNCPG_ONLY:
            query.append((key, value))
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}@{hostport}"
    uri = urlunsplit(("postgresql", netloc, parts.path, urlencode(query), ""))
    env = {"PGPASSWORD": password} if password is not None else {}
    return Libpq(uri=uri, env=env)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(
            f"{name} was not found on PATH: install the PostgreSQL client tools (on Debian: "
            "apt-get install postgresql-client), of the server's major version or newer"
        )
    return path


async def run_tool(
    name: str,
    args: list[str],
    *,
    env: Mapping[str, str],
    stdout: int | None = None,
    tool_timeout: float | None = None,
) -> bytes:
    """Run client tool ``name`` (``pg_dump``...) with ``args`` and ``env`` on top of this
    process's environment, without blocking the event loop; its standard output (unless
    ``stdout`` is a file descriptor it writes to). ``BackupError`` with its last error lines if
    it fails."""
    executable = await asyncio.to_thread(_tool, name)  # a PATH search: file system calls
    process = await asyncio.create_subprocess_exec(
        executable,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout if stdout is not None else asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), tool_timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise BackupError(f"{name} did not finish within {tool_timeout:.0f} s") from None
    if process.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()[-3:]
        raise BackupError(f"{name} failed (exit {process.returncode}): {' / '.join(lines)}")
    return out or b""


async def client_version(name: str) -> str:
    """``pg_dump (PostgreSQL) 15.20 ...``: what ``name --version`` says."""
    return (await run_tool(name, ["--version"], env={})).decode().strip()


def _admin_dsn(dsn: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/postgres"))


async def exists(dsn: str) -> bool:
    """Whether the database ``dsn`` names exists (asked of the server's ``postgres`` database)."""
    conn = await asyncpg.connect(_admin_dsn(dsn))
    try:
        found = await conn.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", database_name(dsn)
        )
        return bool(found)
    finally:
        await conn.close()


@dataclass(frozen=True, slots=True)
class Contents:
    """What a database holds: its user tables, and the rows they hold (exact counts)."""

    tables: int
    rows: int
    other_relations: int  # sequences, views...: restoring over them fails just the same

    @property
    def empty(self) -> bool:
        """No table, sequence, view or other relation outside the system schemas.

        A freshly migrated database (tables, no rows) is *not* empty: ``pg_restore`` of a whole
        schema would collide with every table, and which of the two is wanted is the operator's
        decision (``--force``).
        """
        return self.tables == 0 and self.other_relations == 0

    def describe(self) -> str:
        """``3 tables, 120 rows``."""
        text = f"{self.tables} table(s) with {self.rows} row(s)"
        if self.other_relations:
            text += f" and {self.other_relations} other relation(s)"
        return text


async def contents(dsn: str) -> Contents:
    """The user relations of database ``dsn`` (which must exist), with exact row counts."""
    conn = await asyncpg.connect(dsn)
    try:
        relations = await conn.fetch(
            """
            SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'S', 'v', 'm', 'f')
              AND n.nspname <> ALL($1::text[]) AND n.nspname NOT LIKE 'pg_temp%'
            """,
            list(_SYSTEM_SCHEMAS),
        )
        tables = [r for r in relations if r["kind"] in ("r", "p")]
        rows = 0
        for table in tables:
            name = f"{_quote(table['schema'])}.{_quote(table['name'])}"
            rows += int(await conn.fetchval(f"SELECT count(*) FROM {name}"))  # noqa: S608  # nosec B608: names from pg_class, quoted
        return Contents(tables=len(tables), rows=rows, other_relations=len(relations) - len(tables))
    finally:
        await conn.close()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def server_facts(dsn: str) -> tuple[str, str | None]:
    """(the server's version, the database's Alembic revision or ``None``)."""
    conn = await asyncpg.connect(dsn)
    try:
        version = str(await conn.fetchval("SHOW server_version"))
        has_alembic = await conn.fetchval("SELECT to_regclass('public.alembic_version')")
        revision = None
        if has_alembic is not None:
            revision = await conn.fetchval("SELECT version_num FROM alembic_version LIMIT 1")
        return version, revision
    finally:
        await conn.close()

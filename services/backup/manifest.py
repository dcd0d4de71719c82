"""``manifest.json`` of a backup: what it holds, each file's SHA-256 and size, where it came from.

A backup directory without a manifest is an unfinished one: the manifest is written last,
atomically (to a temporary name, then renamed), so that ``restore`` never trusts a backup that
stopped half-way. Every file of the backup is ``0600`` and the directory ``0700``: the dumps hold
password hashes, the broker's definitions its users' hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from services.backup.postgres import BackupError

__all__ = [
    "FORMAT",
    "MANIFEST",
    "BrokerRecord",
    "DumpRecord",
    "Manifest",
    "create_directory",
    "open_private",
    "read_manifest",
    "sha256_of",
    "verify",
    "write_manifest",
]

FORMAT = 1
MANIFEST = "manifest.json"
_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class DumpRecord:
    """One database's dump (``pg_dump --format=custom``)."""

    name: str  # the file, relative to the backup directory
    service: str
    database: str  # the name of the database it was dumped from
    server: str  # host:port it was dumped from
    sha256: str
    size: int
    pg_dump_version: str
    server_version: str
    alembic_revision: str | None
    started_at: str
    seconds: float


@dataclass(frozen=True, slots=True)
class BrokerRecord:
    """The broker's definitions (exchanges, queues, bindings, policies, users): a file, or why
    there is none."""

    backed_up: bool
    source: str | None = None  # "management-api" or "rabbitmqctl"
    name: str | None = None
    sha256: str | None = None
    size: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """What ``manifest.json`` says."""

    created_at: str
    finished_at: str
    aioshop_version: str
    dumps: list[DumpRecord]
    broker: BrokerRecord
    format: int = FORMAT
    notes: list[str] = field(default_factory=list)

    def files(self) -> list[tuple[str, str, int]]:
        """(name, sha256, size) of every file the manifest vouches for."""
        found = [(d.name, d.sha256, d.size) for d in self.dumps]
        broker = self.broker
        if broker.backed_up and broker.name and broker.sha256 and broker.size is not None:
            found.append((broker.name, broker.sha256, broker.size))
        return found

    def dump_of(self, service: str) -> DumpRecord | None:
        """The dump of ``service``, if the backup has one."""
        return next((d for d in self.dumps if d.service == service), None)


def create_directory(path: Path) -> None:
    """Create ``path`` (and its parents) as a ``0700`` directory; refuse one that holds files."""
    if path.exists():
        if not path.is_dir():
            raise BackupError(f"{path} exists and is not a directory")
        if any(path.iterdir()):
            raise BackupError(f"{path} is not empty: a backup never overwrites files")
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)  # mkdir's mode is masked by the umask, and an existing one keeps its own


def open_private(path: Path) -> int:
    """A new file ``path``, ``0600``, opened for writing (its descriptor); never an existing
    one."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def sha256_of(path: Path) -> tuple[str, int]:
    """The SHA-256 (hex) and size of the file ``path``."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` into ``directory`` atomically (``0600``); its path."""
    final = directory / MANIFEST
    temporary = directory / f".{MANIFEST}.tmp"
    fd = open_private(temporary)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(asdict(manifest), file, indent=2)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(final)
    return final


def read_manifest(directory: Path) -> Manifest:
    """The manifest of the backup in ``directory``; ``BackupError`` if it is missing, unreadable
    or of a format this version does not know."""
    path = directory / MANIFEST
    if not directory.is_dir():
        raise BackupError(f"{directory} is not a directory")
    if not path.is_file():
        raise BackupError(
            f"{path} is missing: not a backup, or one that did not finish (the manifest is "
            "written last)"
        )
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise BackupError(
                f"{path} is of format {data.get('format')!r}; this version reads {FORMAT}"
            )
        return Manifest(
            created_at=data["created_at"],
            finished_at=data["finished_at"],
            aioshop_version=data["aioshop_version"],
            dumps=[DumpRecord(**d) for d in data["dumps"]],
            broker=BrokerRecord(**data["broker"]),
            format=data["format"],
            notes=list(data.get("notes", [])),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{path} cannot be read: {exc}") from exc


def verify(directory: Path, files: list[tuple[str, str, int]]) -> list[str]:
    """What is wrong with ``files`` (name, sha256, size) in ``directory``: one line per missing
    or altered file, none when every one matches."""
    problems = []
    for name, expected, size in files:
        path = directory / name
        if Path(name).name != name:  # the manifest names files in the directory, nowhere else
            problems.append(f"{name}: not a plain file name")
            continue
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        digest, actual_size = sha256_of(path)
        if actual_size != size:
            problems.append(f"{name}: {actual_size} bytes, the manifest says {size}")
        elif digest != expected:
            problems.append(
                f"{name}: SHA-256 {digest[:16]}..., the manifest says {expected[:16]}..."
            )
    return problems

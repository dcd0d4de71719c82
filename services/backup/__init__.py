"""Backups of aioshop: every service database (``pg_dump``, custom format) and the broker's
definitions, with a manifest of checksums; and their restore.

By job: ``dump`` (write a backup), ``restore`` (check it, then restore it), ``manifest`` (what a
backup holds, checksums, private files), ``postgres`` (the client tools, and what a database
holds), ``broker`` (the broker's definitions), ``settings``. ``aioshop backup`` and
``aioshop restore`` (``services.cli.backup``) are the commands; docs/operations.md the runbook.
"""

from services.backup.dump import Target, backup
from services.backup.manifest import Manifest, read_manifest
from services.backup.postgres import BackupError
from services.backup.restore import Refused, Restored, restore
from services.backup.settings import BackupSettings

__all__ = [
    "BackupError",
    "BackupSettings",
    "Manifest",
    "Refused",
    "Restored",
    "Target",
    "backup",
    "read_manifest",
    "restore",
]

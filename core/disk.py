"""Disk space in ``/metrics``: ``disk_free_bytes`` and ``disk_size_bytes``, by ``path`` and
``kind``.

``kind="data"`` is each directory the instance writes to (``DATA_DIRS``, the directory of
``LOG_FILE``, the embedded mode's data directory); ``kind="host"`` is each real local filesystem
of the host, read from ``/proc/mounts``: pseudo filesystems (``proc``, ``sysfs``, ``tmpfs``,
``cgroup``...) are left out, and so are network and FUSE filesystems (``NETWORK_FILESYSTEMS``,
and every ``fuse``, ``fuseblk`` and ``fuse.*`` type): a ``stat`` of an unreachable server's or a
stuck daemon's mount hangs, and it is another host's disk anyway. A filesystem mounted several
times (bind mounts, a container's overlay layers) is reported once, at its first mount point.
Free means available to an unprivileged process (``f_bavail``), as ``df`` shows it.

Measured when scraped (``statvfs`` is a syscall; ``/metrics`` renders in a thread of the
default pool, off the event loop), at most once per ``cache_seconds``: a scrape storm costs one
measurement. One measurement at a time: a scrape that finds one under way returns the last
figures (none before the first) instead of waiting, so that a measurement that hangs (a data
directory on a dead mount) holds one thread of the shared pool, never one per scrape.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = [
    "NETWORK_FILESYSTEMS",
    "PSEUDO_FILESYSTEMS",
    "DiskCollector",
    "Mount",
    "data_directories",
    "host_filesystems",
    "parse_mounts",
]

PSEUDO_FILESYSTEMS = frozenset(
    {
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fusectl",
        "fuse.gvfsd-fuse",
        "fuse.lxcfs",
        "fuse.portal",
        "hugetlbfs",
        "mqueue",
        "nsfs",
        "proc",
        "pstore",
        "ramfs",
        "rpc_pipefs",
        "securityfs",
        "selinuxfs",
        "squashfs",
        "sysfs",
        "tmpfs",
        "tracefs",
    }
)

# Filesystems served over the network (or by a cluster), whose ``stat`` waits for a server.
NETWORK_FILESYSTEMS = frozenset(
    {
        "9p",
        "afs",
        "beegfs",
        "ceph",
        "cifs",
        "coda",
        "davfs",
        "glusterfs",
        "gpfs",
        "lustre",
        "ncpfs",
        "nfs",
        "nfs4",
        "smb3",
        "smbfs",
        "sshfs",
    }
)


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of ``/proc/mounts``."""

    device: str
    path: str
    fstype: str


def _unescape(field: str) -> str:
    # /proc/mounts writes a space, tab, newline and backslash in a path as octal escapes.
    for escaped, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(escaped, char)
    return field


def parse_mounts(text: str) -> list[Mount]:
    """The mounts listed in ``text`` (the format of ``/proc/mounts``), in order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            mounts.append(Mount(_unescape(fields[0]), _unescape(fields[1]), fields[2]))
    return mounts


def _remote(fstype: str) -> bool:
    return (
        fstype in NETWORK_FILESYSTEMS or fstype in {"fuse", "fuseblk"} or fstype.startswith("fuse.")
    )


def host_filesystems(mounts: Iterable[Mount]) -> list[Mount]:
    """The real local filesystems among ``mounts``, each once: no pseudo, network or FUSE
    filesystem, and of mounts of the same device (bind mounts, overlays: all ``overlay`` mounts
    are one) the first only."""
    seen: set[str] = set()
    real = []
    for mount in mounts:
        if mount.fstype in PSEUDO_FILESYSTEMS or _remote(mount.fstype):
            continue
        key = "overlay" if mount.fstype == "overlay" else mount.device
        if key in seen:
            continue
        seen.add(key)
        real.append(mount)
    return real


def data_directories(
    configured: Sequence[str], environ: Mapping[str, str] | None = None
) -> list[str]:
    """The data directories of an instance: ``configured`` (``DATA_DIRS``) and the directory
    of ``LOG_FILE`` when it is set, each once (a relative one is made absolute when measured:
    no ``getcwd`` here, on the event loop)."""
    environ = os.environ if environ is None else environ
    found = list(configured)
    log_file = environ.get("LOG_FILE")
    if log_file:
        found.append(os.path.dirname(log_file) or ".")
    unique: list[str] = []
    for directory in found:
        path = os.path.normpath(directory)
        if path not in unique:
            unique.append(path)
    return unique


@dataclass(frozen=True, slots=True)
class _Space:
    path: str
    kind: str
    free: int
    size: int


class DiskCollector(Collector):
    """``disk_free_bytes`` and ``disk_size_bytes`` of the data directories and the host's
    filesystems (see the module docstring)."""

    def __init__(
        self,
        data_dirs: Sequence[str] = (),
        *,
        mounts_file: str = "/proc/mounts",
        cache_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
    ) -> None:
        self.data_dirs = list(data_dirs)
        self.mounts_file = mounts_file
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._statvfs = statvfs
        self._lock = threading.Lock()
        self._measured: tuple[float, list[_Space]] | None = None

    def describe(self) -> Iterable[Metric]:
        """The two families, without measuring (registration must not touch the disk)."""
        return self._families([])

    def collect(self) -> Iterator[Metric]:
        """The figures, measured at most once per ``cache_seconds``; the last ones (none before
        the first measurement) while another scrape is measuring."""
        if self._lock.acquire(blocking=False):
            try:
                now = self._clock()
                if self._measured is None or now - self._measured[0] >= self.cache_seconds:
                    self._measured = (now, self._measure())
            finally:
                self._lock.release()
        measured = self._measured
        yield from self._families(measured[1] if measured is not None else [])

    @staticmethod
    def _families(spaces: Sequence[_Space]) -> Iterator[Metric]:
        labels = ["path", "kind"]
        free = GaugeMetricFamily(
            "disk_free_bytes", "Bytes available to unprivileged processes", labels=labels
        )
        size = GaugeMetricFamily("disk_size_bytes", "Size of the filesystem", labels=labels)
        for space in spaces:
            free.add_metric([space.path, space.kind], space.free)
            size.add_metric([space.path, space.kind], space.size)
        yield free
        yield size

    def _measure(self) -> list[_Space]:
        data = (os.path.abspath(path) for path in self.data_dirs)
        spaces = [s for path in data if (s := self._space(path, "data")) is not None]
        try:
            text = Path(self.mounts_file).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return spaces
        devices: set[int] = set()
        for mount in host_filesystems(parse_mounts(text)):
            try:
                device = os.stat(mount.path).st_dev
            except OSError:
                continue
            if device in devices:
                continue
            devices.add(device)
            space = self._space(mount.path, "host")
            if space is not None and space.size > 0:
                spaces.append(space)
        return spaces

    def _space(self, path: str, kind: str) -> _Space | None:
        try:
            stat = self._statvfs(path)
        except OSError:  # gone, or not ours to read: no figure rather than a wrong one
            return None
        return _Space(path, kind, stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize)

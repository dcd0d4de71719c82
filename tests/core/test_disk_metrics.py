"""Disk space and the served certificate's expiry in ``/metrics`` (``core.disk``,
``core.certificate``): real ``statvfs`` of real directories, a real HTTPS server."""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import core
from core.certificate import certificate_not_after
from core.disk import DiskCollector, data_directories, host_filesystems, parse_mounts
from core.runner import serve, server_ssl_context
from core.testing import free_port, wait_for
from tests.certificates import self_signed
from tests.core.conftest import ClientFactory, SettingsFactory

MOUNTS = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
udev /dev devtmpfs rw,nosuid,relatime 0 0
devpts /dev/pts devpts rw,nosuid,noexec,relatime 0 0
tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime 0 0
/dev/sda1 / ext4 rw,relatime 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0
/dev/sda1 /var/lib/docker ext4 rw,relatime 0 0
/dev/sdb1 /mnt/my\\040data xfs rw,relatime 0 0
overlay /var/lib/docker/overlay2/a/merged overlay rw,relatime 0 0
overlay /var/lib/docker/overlay2/b/merged overlay rw,relatime 0 0
/dev/loop3 /snap/core/1 squashfs ro,nodev,relatime 0 0
"""

# Network and FUSE filesystems: a stat of one waits for its server or daemon.
REMOTE_MOUNTS = """nas:/export /mnt/nfs nfs rw,relatime,vers=3 0 0
nas:/home /home nfs4 rw,relatime 0 0
//nas/share /mnt/cifs cifs rw,relatime 0 0
//nas/smb3 /mnt/smb3 smb3 rw,relatime 0 0
user@host:/srv /mnt/ssh fuse.sshfs rw,nosuid,nodev,relatime 0 0
/dev/sdc1 /media/usb fuseblk rw,nosuid,nodev,relatime 0 0
s3fs /mnt/bucket fuse.s3fs rw,nosuid,nodev,relatime 0 0
hostshare /mnt/9p 9p rw,relatime 0 0
10.0.0.1:6789:/ /mnt/ceph ceph rw,relatime 0 0
gluster:/vol /mnt/gluster glusterfs rw,relatime 0 0
"""


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.labels["path"], sample.labels["kind"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


@pytest.mark.unit
def test_the_host_set_keeps_real_filesystems_once_and_no_pseudo_one() -> None:
    real = host_filesystems(parse_mounts(MOUNTS))
    assert [(m.path, m.fstype) for m in real] == [
        ("/", "ext4"),
        ("/mnt/my data", "xfs"),  # the escaped space read back
        ("/var/lib/docker/overlay2/a/merged", "overlay"),  # overlays are one filesystem
    ]


@pytest.mark.unit
def test_the_host_set_leaves_out_network_and_fuse_filesystems() -> None:
    real = host_filesystems(parse_mounts(MOUNTS + REMOTE_MOUNTS))
    assert [m.path for m in real] == ["/", "/mnt/my data", "/var/lib/docker/overlay2/a/merged"]


@pytest.mark.unit
def test_a_network_mount_is_never_stat_ed(tmp_path: Path) -> None:
    # The network mount point exists here: only its type keeps it from being measured.
    remote = tmp_path / "nfs"
    remote.mkdir()
    mounts = tmp_path / "mounts"
    mounts.write_text(f"nas:/export {remote} nfs4 rw,relatime 0 0\n")
    measured: list[str] = []

    def statvfs(path: str) -> os.statvfs_result:
        measured.append(path)
        return os.statvfs(path)

    registry = CollectorRegistry()
    registry.register(DiskCollector(mounts_file=str(mounts), statvfs=statvfs))
    assert _samples(registry, "disk_free_bytes") == {}
    assert measured == []


@pytest.mark.unit
def test_a_scrape_during_a_measurement_returns_the_last_figures_without_waiting(
    tmp_path: Path,
) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("")
    inside, release = threading.Event(), threading.Event()
    hold = threading.Event()

    def statvfs(path: str) -> os.statvfs_result:
        if hold.is_set():  # a mount that stopped answering, until the test lets it go
            inside.set()
            release.wait(timeout=30)
        return os.statvfs(path)

    now = [100.0]
    registry = CollectorRegistry()
    registry.register(
        DiskCollector(
            [str(tmp_path)],
            mounts_file=str(mounts),
            cache_seconds=5.0,
            clock=lambda: now[0],
            statvfs=statvfs,
        )
    )
    first = _samples(registry, "disk_size_bytes")
    assert set(first) == {(str(tmp_path), "data")}
    now[0] += 10  # stale: the next scrape measures again
    hold.set()
    with ThreadPoolExecutor(2) as pool:
        try:
            held = pool.submit(_samples, registry, "disk_size_bytes")
            assert inside.wait(timeout=10), "the first scrape never measured"
            second = pool.submit(_samples, registry, "disk_size_bytes")
            # Bounded: without the fix, the second scrape waits for the lock the first holds.
            assert second.result(timeout=10) == first
            assert not held.done()
        finally:
            release.set()
        assert held.result(timeout=10) == first


@pytest.mark.unit
def test_data_directories_are_the_configured_ones_and_the_log_files(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    found = data_directories(
        [str(tmp_path), str(tmp_path)], {"LOG_FILE": str(logs / "users-1.log")}
    )
    assert found == [str(tmp_path), str(logs)]
    assert data_directories([], {}) == []


@pytest.mark.unit
def test_data_directories_report_their_real_statvfs_and_are_cached(tmp_path: Path) -> None:
    data, gone = tmp_path / "data", tmp_path / "gone"
    data.mkdir()
    gone.mkdir()
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS.replace("/dev/sda1 / ext4", f"/dev/sda1 {tmp_path} ext4"))
    now = [100.0]
    registry = CollectorRegistry()
    registry.register(
        DiskCollector(
            [str(data), str(gone)],
            mounts_file=str(mounts),
            cache_seconds=5.0,
            clock=lambda: now[0],
        )
    )
    free = _samples(registry, "disk_free_bytes")
    size = _samples(registry, "disk_size_bytes")
    stat = os.statvfs(data)
    assert size[str(data), "data"] == stat.f_blocks * stat.f_frsize
    # Free space moves with every other writer on this disk: the same filesystem, not the
    # same byte.
    assert 0 < free[str(data), "data"] <= size[str(data), "data"]
    assert (str(gone), "data") in free
    # Only the real filesystems of the mounts file that exist here: tmp_path (ext4 in the
    # file) and nothing of /proc, /sys, /run, cgroups or squashfs.
    assert {path for path, kind in free if kind == "host"} == {str(tmp_path)}

    gone.rmdir()
    now[0] += 4.9  # still within the cache: the figures of the last measurement
    assert (str(gone), "data") in _samples(registry, "disk_free_bytes")
    now[0] += 0.2  # measured again: a directory that is gone has no figure
    assert (str(gone), "data") not in _samples(registry, "disk_free_bytes")


async def test_every_app_reports_its_host_filesystems_and_data_directory(
    service_client: ClientFactory, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    client = await service_client(core.create_app("t", make_settings(data_dirs=[str(tmp_path)])))
    response = await client.get("/metrics")
    assert response.status == 200
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    kinds = {(s.labels["path"], s.labels["kind"]) for s in families["disk_free_bytes"].samples}
    assert (str(tmp_path), "data") in kinds
    hosts = {path for path, kind in kinds if kind == "host"}
    assert hosts, "no host filesystem found"
    pseudo = {"/proc", "/sys", "/dev/pts", "/sys/fs/cgroup"}
    assert hosts.isdisjoint(pseudo)
    sizes = {(s.labels["path"], s.labels["kind"]) for s in families["disk_size_bytes"].samples}
    assert sizes == kinds


async def test_an_https_instance_reports_its_certificate_expiry(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    certfile, keyfile = await asyncio.to_thread(self_signed, tmp_path)
    app = core.create_app("tlsrole", make_settings())
    port = free_port()
    urls: list[str] = []
    server = asyncio.create_task(
        serve(
            app,
            host="127.0.0.1",
            port=port,
            ready=urls.append,
            ssl_context=await asyncio.to_thread(server_ssl_context, str(certfile), str(keyfile)),
        )
    )
    try:

        async def listening() -> bool:
            return bool(urls) or server.done()

        await wait_for(listening)
        assert not server.done(), server
        client_context = await asyncio.to_thread(ssl.create_default_context, cafile=str(certfile))
        async with aiohttp.ClientSession() as session:
            response = await session.get(f"{urls[0]}/metrics", ssl=client_context)
            text = await response.text()
        expiry = {
            sample.labels["role"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "tls_certificate_expiry_timestamp_seconds"
        }
        not_after = await asyncio.to_thread(certificate_not_after, str(certfile))
        assert expiry == {"tlsrole": not_after}
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def test_a_plain_http_instance_has_no_certificate_series(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    client = await service_client(core.create_app("t", make_settings()))
    text = await (await client.get("/metrics")).text()
    assert "tls_certificate_expiry_timestamp_seconds{" not in text

"""``aioshop logs``: every process's log file as one log, filtered and followed; and the files
``aioshop up`` has its processes write."""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from core.log_output import LOG_FILE_VAR
from core.logfiles import log_directory
from core.testing import free_port, wait_for
from services import registry
from services.up import plan
from tests.core.test_logfiles import entry, write
from tests.services.test_cli import (  # noqa: F401  # the fixtures of `aioshop up`'s tests
    _delete_queues,
    _read_until,
    cli_env,
    service_dsns,
)

CLI = [sys.executable, "-m", "services.cli"]


def logs(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [*CLI, "logs", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    directory = log_directory(tmp_path)
    write(directory / "users.log.1", entry(0, "users", "registered <a@b>", cid="c1"))
    write(directory / "users.log", entry(3, "users", "u3"))
    write(
        directory / "orders.log",
        entry(1, "orders", "placed", cid="c1"),
        entry(2, "orders", "refused", level="WARNING", cid="c2"),
    )
    return tmp_path


@pytest.mark.unit
def test_logs_merges_every_file_in_time_order(data_dir: Path) -> None:
    result = logs(data_dir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[4] for line in lines] == ["registered", "placed", "refused", "u3"]
    assert lines[0].split()[2:4] == ["INFO", "users"]
    assert lines[0].endswith("registered <a@b>  cid=c1")


@pytest.mark.unit
def test_logs_filters_and_prints_json(data_dir: Path) -> None:
    result = logs(data_dir, "--correlation-id", "c1", "--json")
    documents = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["message"] for d in documents] == ["registered <a@b>", "placed"]
    result = logs(data_dir, "--service", "orders", "--level", "warning")
    assert [line.split()[4] for line in result.stdout.splitlines()] == ["refused"]
    result = logs(data_dir, "--since", "2026-03-01T12:00:02+00:00")
    assert [line.split()[4] for line in result.stdout.splitlines()] == ["refused", "u3"]
    assert logs(data_dir, "--level", "LOUD").returncode == 2
    assert logs(data_dir, "--since", "soon").returncode == 2
    missing = logs(data_dir / "nowhere")
    assert missing.returncode == 1
    assert "no log files" in missing.stderr


@pytest.mark.unit
async def test_logs_follow_prints_new_lines_of_every_file_until_ctrl_c(data_dir: Path) -> None:
    directory = data_dir / "logs"
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "logs",
        "-f",
        "--data-dir",
        str(data_dir),
        "--correlation-id",
        "c1",
        stdout=asyncio.subprocess.PIPE,
    )
    out: list[str] = []

    async def collect() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            out.append(line.decode().rstrip("\n"))

    reader = asyncio.create_task(collect())

    async def seen(count: int) -> bool:
        return len(out) >= count

    try:
        await wait_for(lambda: seen(2), within=30)
        await asyncio.to_thread(
            write, directory / "orders.log", entry(5, "orders", "paid", cid="c1")
        )
        await asyncio.to_thread(
            write, directory / "orders.log", entry(6, "orders", "other", cid="c9")
        )
        await wait_for(lambda: seen(3), within=30)
        # A rotated file and a process that appeared.
        await asyncio.to_thread((directory / "orders.log").rename, directory / "orders.log.1")
        await asyncio.to_thread(
            write, directory / "orders.log", entry(7, "orders", "shipped", cid="c1")
        )
        await asyncio.to_thread(
            write, directory / "products-1.log", entry(8, "products-1", "released", cid="c1")
        )
        await wait_for(lambda: seen(5), within=30)
        assert [line.split()[4] for line in out] == [
            "registered",
            "placed",
            "paid",
            "shipped",
            "released",
        ]
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await asyncio.wait_for(reader, 10)


@pytest.mark.unit
def test_up_gives_every_process_a_log_file_of_its_own(tmp_path: Path) -> None:
    processes = plan("127.0.0.1", {"products": 2}, log_dir=tmp_path / "logs")
    files = {p.name: p.env[LOG_FILE_VAR] for p in processes}
    assert files["products-1"] == str(tmp_path / "logs" / "products-1.log")
    assert files["gateway"] == str(tmp_path / "logs" / "gateway.log")
    assert len(set(files.values())) == len(processes)
    (dashboard,) = (p for p in processes if p.role == "web")
    assert dashboard.env["DASHBOARD_LOG_DIR"] == str(tmp_path / "logs")
    assert all(LOG_FILE_VAR not in p.env for p in plan("127.0.0.1", {}))


def test_up_writes_the_files_that_logs_reads(
    cli_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
) -> None:
    ports = {name: free_port() for name in registry.SERVICES}
    queues = {name: f"test-logs-{name}-{uuid.uuid4().hex[:8]}" for name in registry.SERVICES}
    env = {
        **cli_env,
        **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
        **{f"{name.upper()}_BUS_QUEUE": queue for name, queue in queues.items()},
        "GATEWAY_PORT": str(free_port()),
        "WEB_PORT": str(free_port()),
        "LOG_LEVEL": "INFO",
        "BUS_EXCHANGE": f"test-logs-{uuid.uuid4().hex[:8]}.events",
    }
    data_dir = tmp_path / "data"
    proc = subprocess.Popen(  # noqa: S603
        [*CLI, "up", "--no-migrate", "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        output = _read_until(proc, "Ctrl-C stops everything", within=90)
        assert "Ctrl-C stops everything" in output, output
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        asyncio.run(_delete_queues(*queues.values()))
    directory = data_dir / "logs"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    names = {path.name for path in directory.iterdir()}
    assert {"users.log", "products.log", "orders.log", "gateway.log", "dashboard.log"} <= names
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        for line in path.read_text().splitlines():
            assert json.loads(line)["process"] == path.name.removesuffix(".log")
    result = logs(data_dir, "--json")
    processes = {json.loads(line)["process"] for line in result.stdout.splitlines()}
    assert {"users", "products", "orders", "gateway", "dashboard"} <= processes

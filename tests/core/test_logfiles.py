"""Reading many processes' log files as one log (``core.logfiles``): merged in time order with
their rotated backups, filtered, and followed across appends, rotations and new files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.logfiles import Follower, LogFilter, log_directory, log_streams, merged, parse_since

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def entry(second: float, process: str, message: str, **fields: Any) -> str:
    """One JSON log line as ``core.logging`` writes it, ``second`` seconds after T0."""
    service = process.rsplit("-", 1)[0] if process[-1].isdigit() else process
    document = {
        "level": fields.pop("level", "INFO"),
        "logger": "tests",
        "message": message,
        "service": service,
        "process": process,
        "correlation_id": fields.pop("cid", None),
        "ts": (T0 + timedelta(seconds=second)).isoformat(),
        **fields,
    }
    return json.dumps(document) + "\n"


def write(path: Path, *lines: str) -> None:
    with path.open("a") as file:
        file.writelines(lines)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """Three processes' files, one of them rotated twice, their times interleaved."""
    directory = log_directory(tmp_path)
    write(directory / "users.log.2", entry(0, "users", "u0"))
    write(directory / "users.log.1", entry(2, "users", "u2", level="WARNING", cid="c1"))
    write(directory / "users.log", entry(5, "users", "u5"))
    write(
        directory / "products-0.log",
        entry(1, "products-0", "p1", cid="c1"),
        entry(4, "products-0", "p4"),
    )
    write(
        directory / "products-1.log",
        entry(3, "products-1", "q3", level="ERROR", cid="c2", exc_info="Traceback\n  line"),
        "not json\n",
        entry(6, "products-1", "q6", cid="c1"),
    )
    return directory


def messages(lines: Any) -> list[str]:
    return [line.record["message"] for line in lines]


def test_every_file_and_backup_merges_in_time_order(logs: Path) -> None:
    assert log_streams(logs)["users"] == [
        logs / "users.log.2",
        logs / "users.log.1",
        logs / "users.log",
    ]
    assert messages(merged(logs)) == ["u0", "p1", "u2", "q3", "p4", "u5", "q6"]


def test_filters_by_service_process_level_correlation_and_time(logs: Path) -> None:
    assert messages(merged(logs, LogFilter(services=frozenset({"products"})))) == [
        "p1",
        "q3",
        "p4",
        "q6",
    ]
    assert messages(merged(logs, LogFilter(services=frozenset({"products-1", "users"})))) == [
        "u0",
        "u2",
        "q3",
        "u5",
        "q6",
    ]
    assert messages(merged(logs, LogFilter(level=30))) == ["u2", "q3"]
    assert messages(merged(logs, LogFilter(correlation_id="c1"))) == ["p1", "u2", "q6"]
    since = T0 + timedelta(seconds=4)
    assert messages(merged(logs, LogFilter(since=since))) == ["p4", "u5", "q6"]


def test_a_line_reads_as_the_text_format(logs: Path) -> None:
    (line,) = merged(logs, LogFilter(correlation_id="c2"))
    text = line.text()
    local = (T0 + timedelta(seconds=3)).astimezone()
    assert text.startswith(f"{local:%Y-%m-%d %H:%M:%S}.000 ERROR   products-1 q3  cid=c2")
    assert text.endswith("\n    Traceback\n      line")


def test_since_takes_durations_and_times() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_since("15m", now=now) == now - timedelta(minutes=15)
    assert parse_since("2h", now=now) == now - timedelta(hours=2)
    assert parse_since("2026-03-01T10:00:00+00:00") == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert parse_since("2026-03-01T10:00:00").tzinfo is not None  # local time
    with pytest.raises(ValueError, match="duration"):
        parse_since("yesterday")


def test_a_follower_reads_appends_rotations_and_new_files(logs: Path) -> None:
    follower = Follower(logs, LogFilter(services=frozenset({"users", "orders"})))
    try:
        assert messages(follower.history()) == ["u0", "u2", "u5"]
        assert follower.poll() == []
        write(logs / "users.log", entry(7, "users", "u7"), '{"partial": ')
        assert messages(follower.poll()) == ["u7"]
        # The rest of the partial line, then a rotation, then a line in the new file.
        write(logs / "users.log", "1}\n", entry(8, "users", "u8"))
        (logs / "users.log").rename(logs / "users.log.1")
        write(logs / "users.log", entry(9, "users", "u9"))
        write(logs / "orders.log", entry(8.5, "orders", "o8"))  # a process that started
        write(logs / "products-0.log", entry(10, "products-0", "p10"))  # filtered out
        assert messages(follower.poll()) == ["u8", "o8", "u9"]
        assert follower.poll() == []
    finally:
        follower.close()


def test_the_log_directory_is_private(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir(mode=0o755)
    directory = log_directory(tmp_path)
    assert directory.stat().st_mode & 0o777 == 0o700

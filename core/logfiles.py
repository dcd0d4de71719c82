"""Reading the log files of many processes as one log: merged in time order, filtered, followed.

Each process writes JSON lines to a file of its own (``LOG_FILE``, rotated to ``<name>.1``,
``<name>.2``... by ``core.log_output.RotatingFileWriter``); ``aioshop up`` puts them all in
``<data-dir>/logs``. A *stream* is one process's file with its rotated backups, oldest first: its
lines are in time order, so the streams of a directory merge into one time-ordered log with a heap
(``merged``). ``Follower`` does the same and then keeps reading what is appended, across rotations
and files that appear later (``aioshop logs -f``). The dashboard's trace view reads the lines of
one correlation id from here too (``LogFilter.correlation_id``).

Everything here reads files: call it from a thread, never on the event loop.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson

__all__ = [
    "Follower",
    "LogFilter",
    "LogLine",
    "log_directory",
    "log_streams",
    "merged",
    "parse_since",
]

_BACKUP = re.compile(r"^(?P<name>.+\.log)\.(?P<number>[0-9]{1,3})$")
_RELATIVE = re.compile(r"^(?P<count>[0-9]+(?:\.[0-9]+)?)(?P<unit>[smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def log_directory(data_dir: Path) -> Path:
    """``<data_dir>/logs``, created ``0700`` (made so if it exists: the lines may carry personal
    data), where ``aioshop up`` has every process write its log file."""
    directory = data_dir / "logs"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    return directory


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a log file: its time, its JSON document and the line as written."""

    at: datetime
    record: dict[str, Any]
    raw: bytes
    stream: str = ""  # the file it came from, without ``.log``: the process, by default

    @property
    def level(self) -> str:
        """``INFO``, ``WARNING``..."""
        return str(self.record.get("level") or "")

    @property
    def process(self) -> str:
        """The process that wrote it (``products-1``)."""
        return str(self.record.get("process") or self.record.get("service") or self.stream)

    @property
    def correlation_id(self) -> str | None:
        """The correlation id of the request or message it was logged for, if any."""
        value = self.record.get("correlation_id")
        return None if value is None else str(value)

    @property
    def trace_id(self) -> str | None:
        """The trace id of the span it was logged in, if any."""
        value = self.record.get("trace_id")
        return None if value is None else str(value)

    def text(self) -> str:
        """The line for a person, as the text log format has it (with the date, in local
        time): ``date time level process message [cid=...]``, a traceback indented below."""
        moment = self.at.astimezone()
        message = str(self.record.get("message", "")).replace("\r", "\\r").replace("\n", "\\n")
        line = (
            f"{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond // 1000:03d} "
            f"{self.level:<7} {self.process:<10} {message}"
        )
        if self.correlation_id:
            line = f"{line}  cid={self.correlation_id}"
        for key in ("exc_info", "stack_info"):
            detail = self.record.get(key)
            if detail:
                line += "".join(f"\n    {row}" for row in str(detail).splitlines())
        return line

    def view(self) -> dict[str, Any]:
        """The fields the dashboard shows."""
        return {
            "at": self.at.isoformat(),
            "level": self.level,
            "process": self.process,
            "logger": self.record.get("logger"),
            "message": self.record.get("message"),
            "correlation_id": self.correlation_id,
            "trace_id": self.trace_id,
        }


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which lines to keep; an empty filter keeps every line.

    ``services``: a line's service (``products``) or process (``products-1``) is one of them;
    ``level``: the least level (``WARNING`` keeps warnings and errors); ``correlation_id``:
    exactly this one; ``since``: written at or after.
    """

    services: frozenset[str] = field(default_factory=frozenset)
    level: int = 0
    correlation_id: str | None = None
    since: datetime | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.since.tzinfo is None:
            raise ValueError("since must be an aware datetime")

    def admits_raw(self, raw: bytes) -> bool:
        """Whether the undecoded line may match (cheap: lines of other ids are not parsed)."""
        return self.correlation_id is None or self.correlation_id.encode() in raw

    def admits(self, line: LogLine) -> bool:
        """Whether ``line`` matches."""
        record = line.record
        if self.since is not None and line.at < self.since:
            return False
        if self.correlation_id is not None and line.correlation_id != self.correlation_id:
            return False
        if self.level:
            level = logging.getLevelName(line.level)
            if not isinstance(level, int) or level < self.level:
                return False
        if self.services:
            names = {record.get("service"), record.get("process"), line.stream}
            if not self.services & {str(name) for name in names if name}:
                return False
        return True


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """``--since``: a duration back from now (``90s``, ``15m``, ``2h``, ``1d``) or an ISO 8601
    time (local time when it names no offset); ``ValueError`` otherwise."""
    text = value.strip()
    relative = _RELATIVE.match(text)
    if relative:
        seconds = float(relative["count"]) * _UNITS[relative["unit"]]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since takes a duration (90s, 15m, 2h, 1d) or an ISO 8601 time: {value!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()


def _parse(raw: bytes, stream: str) -> LogLine | None:
    try:
        record = orjson.loads(raw)
        at = datetime.fromisoformat(record["ts"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # not one of ours (a partial or foreign line): skipped
    if not isinstance(record, dict):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return LogLine(at, record, raw.rstrip(b"\n"), stream)


def _lines(raws: Iterable[bytes], stream: str, keep: LogFilter) -> Iterator[LogLine]:
    for raw in raws:
        if not keep.admits_raw(raw):
            continue
        line = _parse(raw, stream)
        if line is not None and keep.admits(line):
            yield line


def _whole_lines(file: IO[bytes]) -> Iterator[bytes]:
    """The complete lines of ``file`` from where it is; stops before a line still being
    written (no newline yet), leaving the file at its start."""
    while True:
        position = file.tell()
        raw = file.readline()
        if not raw:
            return
        if not raw.endswith(b"\n"):
            file.seek(position)
            return
        yield raw


def _read_all(path: Path) -> Iterator[bytes]:
    try:
        file = path.open("rb")
    except FileNotFoundError:  # rotated away since it was listed
        return
    with file:
        yield from _whole_lines(file)


def log_streams(directory: Path) -> dict[str, list[Path]]:
    """Every stream of ``directory``: its name (the file's, without ``.log``) and its files,
    oldest first (``name.log.3``, ``name.log.2``, ``name.log.1``, ``name.log``)."""
    backups: dict[str, list[tuple[int, Path]]] = {}
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return {}
    for path in entries:
        if not path.is_file():
            continue
        if path.name.endswith(".log"):
            backups.setdefault(path.name, []).append((0, path))
            continue
        backup = _BACKUP.match(path.name)
        if backup:
            backups.setdefault(backup["name"], []).append((int(backup["number"]), path))
    return {
        name.removesuffix(".log"): [path for _, path in sorted(files, reverse=True)]
        for name, files in sorted(backups.items())
    }


def merged(directory: Path, keep: LogFilter | None = None) -> Iterator[LogLine]:
    """Every matching line of every stream of ``directory``, in time order (lazily: a heap
    merge of the streams)."""
    keep = keep or LogFilter()
    streams = [
        _lines(itertools.chain.from_iterable(_read_all(path) for path in paths), name, keep)
        for name, paths in log_streams(directory).items()
    ]
    return heapq.merge(*streams, key=lambda line: line.at)


class _Tail:
    """The current file of one stream, read as it grows, across its rotations."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self.file: IO[bytes] = path.open("rb")

    def read(self) -> Iterator[bytes]:
        """What was appended since the last read (the rest of the old file first, after a
        rotation)."""
        yield from _whole_lines(self.file)
        try:
            current = self.path.stat()
        except FileNotFoundError:  # between a rotation's rename and the new file
            return
        opened = os.fstat(self.file.fileno())
        if current.st_ino != opened.st_ino:
            yield from _whole_lines(self.file)  # the lines written before the rotation
            self.file.close()
            self.file = self.path.open("rb")
            yield from _whole_lines(self.file)
        elif current.st_size < self.file.tell():  # truncated in place
            self.file.seek(0)
            yield from _whole_lines(self.file)

    def close(self) -> None:
        """Stop reading."""
        self.file.close()


class Follower:
    """Every stream of a directory, then what is appended to it (``aioshop logs -f``).

    ``history()`` gives the lines written so far, merged in time order; each ``poll()`` then
    gives the lines appended since (in time order within the poll), including those of files
    rotated meanwhile and of streams that appeared. ``close()`` when done.
    """

    def __init__(self, directory: Path, keep: LogFilter | None = None) -> None:
        self.directory = directory
        self.keep = keep or LogFilter()
        self._tails: dict[str, _Tail] = {}

    def history(self) -> Iterator[LogLine]:
        """The lines written so far, in time order (lazily)."""
        streams = []
        for name, paths in log_streams(self.directory).items():
            *older, current = paths
            raws: Iterable[bytes] = itertools.chain.from_iterable(_read_all(p) for p in older)
            if current.name.endswith(".log") and name not in self._tails:
                try:
                    tail = self._tails[name] = _Tail(current, name)
                except FileNotFoundError:
                    pass
                else:
                    raws = itertools.chain(raws, tail.read())
            streams.append(_lines(raws, name, self.keep))
        return heapq.merge(*streams, key=lambda line: line.at)

    def poll(self) -> list[LogLine]:
        """The lines appended since the history or the last poll, in time order."""
        for name, paths in log_streams(self.directory).items():
            current = paths[-1]
            if name not in self._tails and current.name.endswith(".log"):
                try:
                    self._tails[name] = _Tail(current, name)
                except FileNotFoundError:
                    continue
        found: list[LogLine] = []
        for name, tail in self._tails.items():
            found.extend(_lines(tail.read(), name, self.keep))
        found.sort(key=lambda line: line.at)
        return found

    def close(self) -> None:
        """Close every file."""
        for tail in self._tails.values():
            tail.close()
        self._tails.clear()

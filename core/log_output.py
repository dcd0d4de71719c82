"""Where log lines go: a thread that writes them in batches, and the access log's direct path.

``LineWriter`` queues lines for a file descriptor and writes them from a thread of its own, so
the event loop never waits on a pipe or a disk; ``BufferedHandler`` feeds it from ``logging``;
``DirectOutput`` builds the line a formatter would, for events that skip ``logging`` (one access
line per request). ``core.logging`` installs them.

A log file (``LOG_FILE``, ``LogFileSettings``) receives every line as well, always as JSON: a
``RotatingFileWriter`` (a ``LineWriter`` whose thread also rotates the file by size, keeping
``LOG_FILE_BACKUPS`` older files ``<name>.1``, ``<name>.2``...), fed by the same handler
(``FileOutput``). The file is ``0600`` and a directory it creates ``0700``: lines may carry personal
data.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "LOG_FILE_VAR",
    "BufferedHandler",
    "DirectOutput",
    "FileOutput",
    "LineWriter",
    "LogFileSettings",
    "RotatingFileWriter",
]

LOG_FILE_VAR = "LOG_FILE"


class LineWriter:
    """Lines for a file descriptor, written by a thread of its own in batches.

    ``write`` only queues (the event loop never waits on a pipe or a disk); the thread wakes once
    per batch, lets lines gather for ``interval`` seconds and writes them with one ``os.write``.
    ``flush`` writes what is queued in the calling thread; ``close`` flushes and stops the thread.
    A write that fails drops its batch (counted in ``failed``); past ``max_pending`` queued lines
    new ones are dropped (counted in ``dropped``, and reported by a line from ``on_dropped``).
    """

    def __init__(
        self,
        fd: int,
        *,
        interval: float = 0.05,
        max_pending: int = 100_000,
        on_dropped: Callable[[int], bytes] | None = None,
    ) -> None:
        self.interval = interval
        self.max_pending = max_pending
        self.dropped = 0
        self.failed = 0
        self._fd = os.dup(fd)  # ours: the caller may close its stream, and its number be reused
        self._on_dropped = on_dropped
        self._reported_drops = 0
        self._pending: deque[bytes] = deque()
        self._signalled = False
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._write_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def write(self, line: bytes) -> None:
        """Queue ``line`` (bytes ending with a newline); never blocks."""
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        self._pending.append(line)
        if not self._signalled:
            self._signalled = True
            self._wake.set()

    def flush(self) -> None:
        """Write everything queued so far, in the calling thread."""
        with self._write_lock:
            self._write_pending()

    def close(self) -> None:
        """Write everything queued and stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout=10)
        # Bounded: a reader that stopped reading a full pipe must not hang the exit.
        if self._write_lock.acquire(timeout=10):
            try:
                self._write_pending()
                os.close(self._fd)
                self._fd = -1
            finally:
                self._write_lock.release()

    def _run(self) -> None:
        while not self._closing.is_set():
            self._wake.wait()
            self._closing.wait(self.interval)  # let a batch gather; cut short by close()
            self._wake.clear()
            # Reset before draining: a line queued from now on signals again.
            self._signalled = False
            self.flush()

    def _write_pending(self) -> None:
        pending = self._pending
        batch: list[bytes] = []
        while pending:
            batch.append(pending.popleft())
        drops = self.dropped - self._reported_drops
        if drops and self._on_dropped is not None:
            self._reported_drops = self.dropped
            batch.append(self._on_dropped(drops))
        if batch and self._fd >= 0:
            self._write_all(b"".join(batch))

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                try:
                    written = os.write(self._fd, view)
                except BlockingIOError:  # someone made the shared descriptor non-blocking
                    select.select([], [self._fd], [], 1.0)
                    continue
                view = view[written:]
        except OSError:
            self.failed += 1  # nowhere to report it: the output itself is failing


class BufferedHandler(logging.Handler):
    """A handler writing each formatted record as one line through a ``LineWriter``, and as a
    JSON line to the log file of ``file`` when there is one."""

    def __init__(self, writer: LineWriter, *, file: FileOutput | None = None) -> None:
        super().__init__()
        self.writer = writer
        self.file = file

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record's line (and its file line)."""
        try:
            line = self.format(record).encode("utf-8", "backslashreplace") + b"\n"
            self.writer.write(line)
            file = self.file
            if file is not None:
                file.writer.write(file.line(record, line))
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Write every queued line now."""
        self.writer.flush()
        if self.file is not None:
            self.file.writer.flush()

    def close(self) -> None:
        """Write every queued line and stop the writers."""
        self.writer.close()
        if self.file is not None:
            self.file.writer.close()
        super().close()


class DirectOutput:
    """What ``configure_logging`` installed, for events built without a ``LogRecord``.

    ``write`` produces the very line the installed formatter would for a record of the same
    logger, level, message, correlation id and ``extra`` fields, and queues it (and its JSON line
    for the handler's log file, when there is one).
    """

    def __init__(self, handler: BufferedHandler, *, service: str, process: str, json: bool) -> None:
        self.handler = handler
        self.service = service
        self.process = process
        self.json = json
        self._second = -1
        self._json_prefix = ""
        self._text_prefix = ""

    def write(
        self,
        logger: str,
        level: int,
        message: str,
        correlation_id: str | None,
        extra: dict[str, Any],
    ) -> None:
        """Queue one event."""
        now = time.time_ns()
        second, nanos = divmod(now, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._json_prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._text_prefix = datetime.fromtimestamp(second).strftime("%H:%M:%S")
        level_name = logging.getLevelName(level)
        file = self.handler.file
        if self.json:
            line = self._json_line(nanos, level_name, logger, message, correlation_id, extra)
            self.handler.writer.write(line)
            if file is not None:
                file.writer.write(line)
            return
        text = message.replace("\r", "\\r").replace("\n", "\\n")
        text = (
            f"{self._text_prefix}.{nanos // 1_000_000:03d} {level_name:<7} "
            f"{self.process:<10} {text}"
        )
        if correlation_id:
            text = f"{text}  cid={correlation_id}"
        self.handler.writer.write((text + "\n").encode("utf-8", "backslashreplace"))
        if file is not None:
            line = self._json_line(nanos, level_name, logger, message, correlation_id, extra)
            file.writer.write(line)

    def _json_line(
        self,
        nanos: int,
        level_name: str,
        logger: str,
        message: str,
        correlation_id: str | None,
        extra: dict[str, Any],
    ) -> bytes:
        micros = nanos // 1000
        # datetime.isoformat leaves out a zero fraction: the same text as the formatter's.
        prefix = self._json_prefix
        ts = f"{prefix}.{micros:06d}+00:00" if micros else f"{prefix}+00:00"
        document = {
            "level": level_name,
            "logger": logger,
            "message": message,
            "service": self.service,
            "process": self.process,
            "correlation_id": correlation_id,
            "ts": ts,
            **extra,
        }
        return orjson.dumps(document, default=str, option=orjson.OPT_APPEND_NEWLINE)


class LogFileSettings(BaseSettings):
    """Where a process also writes its log lines, always as JSON (empty: nowhere).

    - ``log_file`` (``LOG_FILE``): the file's path; ``aioshop up`` sets
      ``<data-dir>/logs/<process>.log`` for each process it starts;
    - ``log_file_max_bytes`` (``LOG_FILE_MAX_BYTES``): the size past which the file is rotated
      (0: never);
    - ``log_file_backups`` (``LOG_FILE_BACKUPS``): how many rotated files are kept.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    log_file: str = ""
    log_file_max_bytes: int = Field(default=10 * 2**20, ge=0)
    log_file_backups: int = Field(default=3, ge=0, le=100)

    def output(self, formatter: logging.Formatter | None) -> FileOutput | None:
        """The file's output (``formatter``: see ``FileOutput``), or ``None`` without a file."""
        if not self.log_file:
            return None
        writer = RotatingFileWriter(
            self.log_file, max_bytes=self.log_file_max_bytes, backups=self.log_file_backups
        )
        return FileOutput(writer, formatter)


class FileOutput:
    """The log file beside a handler's main output: its writer, and the formatter of its JSON
    lines, or ``None`` when the main output's lines are JSON already (then written as they are)."""

    def __init__(self, writer: LineWriter, formatter: logging.Formatter | None) -> None:
        self.writer = writer
        self.formatter = formatter

    def line(self, record: logging.LogRecord, line: bytes) -> bytes:
        """The file's line of ``record``, whose line in the main output is ``line``."""
        if self.formatter is None:
            return line
        return self.formatter.format(record).encode("utf-8", "backslashreplace") + b"\n"


class RotatingFileWriter(LineWriter):
    """A ``LineWriter`` appending to the file at ``path``, rotated by its thread by size.

    Before a batch would take the file past ``max_bytes`` (0: never), ``path`` becomes
    ``path.1`` (``path.1`` becomes ``path.2``, and so on up to ``backups``; the oldest is
    removed) and a new file is started. The file is created ``0600`` (an existing one is made
    so), a missing directory ``0700``.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, max_bytes: int, backups: int, **kwargs: Any
    ) -> None:
        self.path = os.fspath(path)
        self.max_bytes = max_bytes
        self.backups = backups
        fd = self._open()
        try:
            self._size = os.fstat(fd).st_size
            super().__init__(fd, **kwargs)
        finally:
            os.close(fd)

    def _open(self) -> int:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        return fd

    def _write_all(self, data: bytes) -> None:
        if self.max_bytes and self._size and self._size + len(data) > self.max_bytes:
            try:
                self._rotate()
            except OSError:
                self.failed += 1  # keep writing to the file we have
        super()._write_all(data)
        self._size += len(data)

    def _rotate(self) -> None:
        if self.backups:
            for number in range(self.backups - 1, 0, -1):
                older = f"{self.path}.{number}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{number + 1}")
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        fd = self._open()
        os.close(self._fd)
        self._fd = fd
        self._size = 0

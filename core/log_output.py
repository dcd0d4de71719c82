"""Where log lines go: a thread that writes them in batches, and the access log's direct path.

``LineWriter`` queues lines for a file descriptor and writes them from a thread of its own, so
the event loop never waits on a pipe or a disk; ``BufferedHandler`` feeds it from ``logging``;
``DirectOutput`` builds the line a formatter would, for events that skip ``logging`` (one access
line per request). ``core.logging`` installs them.
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

__all__ = ["BufferedHandler", "DirectOutput", "LineWriter"]


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
    """A handler writing each formatted record as one line through a ``LineWriter``."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record's line."""
        try:
            self.writer.write(self.format(record).encode("utf-8", "backslashreplace") + b"\n")
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Write every queued line now."""
        self.writer.flush()

    def close(self) -> None:
        """Write every queued line and stop the writer."""
        self.writer.close()
        super().close()


class DirectOutput:
    """What ``configure_logging`` installed, for events built without a ``LogRecord``.

    ``write`` produces the very line the installed formatter would for a record of the same
    logger, level, message, correlation id and ``extra`` fields, and queues it.
    """

    def __init__(self, handler: BufferedHandler, *, service: str, process: str, json: bool) -> None:
        self.handler = handler
        self.service = service
        self.process = process
        self.json = json
        self._second = -1
        self._prefix = ""

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
            moment = (
                datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
                if self.json
                else datetime.fromtimestamp(second).strftime("%H:%M:%S")
            )
            self._prefix = moment
        level_name = logging.getLevelName(level)
        if self.json:
            micros = nanos // 1000
            # datetime.isoformat leaves out a zero fraction: the same text as the formatter's.
            ts = f"{self._prefix}.{micros:06d}+00:00" if micros else f"{self._prefix}+00:00"
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
            line = orjson.dumps(document, default=str, option=orjson.OPT_APPEND_NEWLINE)
        else:
            message = message.replace("\r", "\\r").replace("\n", "\\n")
            text = (
                f"{self._prefix}.{nanos // 1_000_000:03d} {level_name:<7} "
                f"{self.process:<10} {message}"
            )
            if correlation_id:
                text = f"{text}  cid={correlation_id}"
            line = (text + "\n").encode("utf-8", "backslashreplace")
        self.handler.writer.write(line)

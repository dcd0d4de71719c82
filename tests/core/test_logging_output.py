"""core.logging's buffered output: lines queued and written by a thread, all of them at exit, the
access log's direct lines identical to what a record would give, a failing output harmless."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest

import core
from core import Path as PathParam
from core import Router
from core.logging import (
    BufferedHandler,
    LineWriter,
    configure_logging,
    direct_output,
    flush_logging,
)
from core.settings import BaseServiceSettings
from tests.core.conftest import ClientFactory

pytestmark = pytest.mark.unit

ACCESS_FIELDS = [
    "level",
    "logger",
    "message",
    "service",
    "process",
    "correlation_id",
    "ts",
    "method",
    "path",
    "status",
    "duration_ms",
    "remote",
]
TEXT_LINE = re.compile(
    r"^\d\d:\d\d:\d\d\.\d{3} INFO    t-0        GET /items/\{id\} 200  cid=txt-1$"
)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """``configure_logging`` replaces the root handlers: stop ours, put pytest's back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if isinstance(handler, BufferedHandler):
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_every_queued_line_is_written_in_order_when_the_writer_closes(tmp_path: Path) -> None:
    target = tmp_path / "out.log"
    with target.open("wb") as file:
        # An interval no test waits for: only close() can have written the lines.
        writer = LineWriter(file.fileno(), interval=3600)
        for i in range(1000):
            writer.write(b"%d\n" % i)
        writer.close()
    assert target.read_bytes().splitlines() == [b"%d" % i for i in range(1000)]


def test_the_thread_writes_queued_lines_without_being_asked(tmp_path: Path) -> None:
    target = tmp_path / "out.log"
    with target.open("wb") as file:
        writer = LineWriter(file.fileno(), interval=0.01)
        try:
            writer.write(b"one\n")
            writer.write(b"two\n")
            _wait_for(lambda: target.read_bytes() == b"one\ntwo\n")
            writer.write(b"three\n")  # a second batch, after the thread went back to waiting
            _wait_for(lambda: target.read_bytes() == b"one\ntwo\nthree\n")
        finally:
            writer.close()


def test_a_failing_output_drops_its_lines_and_raises_nothing() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: every write fails with EPIPE
    try:
        writer = LineWriter(write_end, interval=3600)
        writer.write(b"lost\n")
        writer.flush()
        writer.close()
    finally:
        os.close(write_end)
    assert writer.failed == 1


def test_past_the_bound_lines_are_dropped_and_the_drop_is_reported(tmp_path: Path) -> None:
    target = tmp_path / "out.log"
    with target.open("w") as stream:
        configure_logging("products", fmt="json", stream=stream)
        (handler,) = logging.getLogger().handlers
        assert isinstance(handler, BufferedHandler)
        writer = handler.writer
        writer.max_pending = 3
        writer.interval = 3600
        with writer._write_lock:  # the thread cannot drain meanwhile
            for i in range(5):
                logging.getLogger("tests.output").warning("line %d", i)
        flush_logging()
    events = [json.loads(line) for line in target.read_text().splitlines()]
    messages = [event["message"] for event in events]
    assert messages[-1] == "2 log lines dropped: the output does not keep up"
    assert len(messages) == 4  # 3 of 5, and the notice
    assert writer.dropped == 2


@pytest.fixture
def items_app(settings: BaseServiceSettings) -> Any:
    router = Router()

    @router.get("/items/{id}")
    async def get_item(item: Annotated[int, PathParam(alias="id")]) -> dict[str, int]:
        return {"id": item}

    return core.create_app("t", settings, routers=[router])


async def _logged_lines(
    service_client: ClientFactory, app: Any, target: Path, fmt: str, correlation: str
) -> list[str]:
    """The access lines of one request, logged to ``target`` (files are handled off the loop:
    the test fails on any blocking call in it)."""
    stream = await asyncio.to_thread(target.open, "w")
    try:
        await asyncio.to_thread(configure_logging, "t", fmt=fmt, stream=stream, process="t-0")
        assert direct_output(logging.getLogger("core.access"), logging.INFO) is not None
        client = await service_client(app)
        response = await client.get("/items/7", headers={"X-Correlation-ID": correlation})
        assert response.status == 200
        await asyncio.to_thread(flush_logging)
    finally:
        await asyncio.to_thread(stream.close)
    text = await asyncio.to_thread(target.read_text)
    return [line for line in text.splitlines() if "/items/" in line]


def _recorded_line(target: Path, extra: dict[str, Any]) -> dict[str, Any]:
    with target.open("w") as stream:
        configure_logging("t", fmt="json", stream=stream, process="t-0")
        logging.getLogger("core.access").info("GET /items/{id} 200", extra=extra)
        flush_logging()
    event: dict[str, Any] = json.loads(target.read_text())
    return event


async def test_the_direct_access_line_is_the_line_a_record_would_give(
    service_client: ClientFactory, items_app: Any, tmp_path: Path
) -> None:
    (line,) = await _logged_lines(service_client, items_app, tmp_path / "a.log", "json", "js-1")
    event = json.loads(line)
    assert list(event) == ACCESS_FIELDS
    assert {k: v for k, v in event.items() if k not in ("ts", "duration_ms")} == {
        "level": "INFO",
        "logger": "core.access",
        "message": "GET /items/{id} 200",
        "service": "t",
        "process": "t-0",
        "correlation_id": "js-1",
        "method": "GET",
        "path": "/items/{id}",
        "status": 200,
        "remote": "127.0.0.1",
    }
    assert isinstance(event["duration_ms"], float)
    assert event["ts"].endswith("+00:00")
    # The same event as a record, through the formatter: the same keys in the same order.
    fields = {k: event[k] for k in ("method", "path", "status", "duration_ms")}
    extra = {**fields, "correlation_id": "js-1", "remote": "127.0.0.1"}
    recorded = await asyncio.to_thread(_recorded_line, tmp_path / "b.log", extra)
    assert list(recorded) == list(event)
    assert {k: v for k, v in recorded.items() if k != "ts"} == {
        k: v for k, v in event.items() if k != "ts"
    }


async def test_on_a_terminal_the_direct_access_line_is_the_readable_one(
    service_client: ClientFactory, items_app: Any, tmp_path: Path
) -> None:
    lines = await _logged_lines(service_client, items_app, tmp_path / "a.log", "text", "txt-1")
    assert len(lines) == 1
    assert TEXT_LINE.match(lines[0]), lines


async def test_requests_are_served_when_the_output_fails(
    service_client: ClientFactory, items_app: Any
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        with os.fdopen(write_end, "w", closefd=False) as stream:
            await asyncio.to_thread(configure_logging, "t", fmt="json", stream=stream)
            client = await service_client(items_app)
            for _ in range(3):
                assert (await client.get("/items/1")).status == 200
            await asyncio.to_thread(flush_logging)
    finally:
        os.close(write_end)
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, BufferedHandler)
    assert handler.writer.failed >= 1


def test_no_line_is_lost_when_the_process_exits() -> None:
    """Queued lines, direct and through records, are on the output when the process is gone."""
    code = (
        "import logging, sys\n"
        "from core.logging import configure_logging, direct_output\n"
        "configure_logging('t', fmt='json')\n"
        "access = logging.getLogger('core.access')\n"
        "for i in range(500):\n"
        "    direct_output(access, logging.INFO).write('core.access', logging.INFO, f'r{i}', None,"
        " {'status': 200})\n"
        "    logging.getLogger('t').warning('w%d', i)\n"
        "sys.exit(0)\n"
    )
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    messages = [json.loads(line)["message"] for line in result.stderr.splitlines()]
    assert messages == [m for i in range(500) for m in (f"r{i}", f"w{i}")]

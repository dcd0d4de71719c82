"""The log file (``LOG_FILE``): every line also as JSON in a file, rotated by size, private, and
written by the writer's thread only."""

from __future__ import annotations

import inspect
import io
import json
import logging
import stat
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import core.log_output
from core.log_output import LogFileSettings, RotatingFileWriter
from core.logging import BufferedHandler, configure_logging, direct_output, flush_logging

pytestmark = pytest.mark.unit


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


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_lines_rotate_by_size_keeping_the_given_backups(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "products-1.log"
    writer = RotatingFileWriter(path, max_bytes=100, backups=2, interval=3600)
    try:
        for i in range(12):
            writer.write(b"line %02d %s\n" % (i, b"x" * 30))  # 40 bytes: two a file
            writer.flush()
    finally:
        writer.close()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["products-1.log", "products-1.log.1", "products-1.log.2"]
    assert all(p.stat().st_size <= 100 for p in path.parent.iterdir())
    # The newest lines in the file, the older ones in the backups, the oldest gone.
    text = [Path(f"{path}{suffix}").read_bytes() for suffix in (".2", ".1", "")]
    numbers = [int(line.split()[1]) for chunk in text for line in chunk.splitlines()]
    assert numbers == list(range(6, 12))


def test_without_backups_a_full_file_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "one.log"
    writer = RotatingFileWriter(path, max_bytes=50, backups=0, interval=3600)
    try:
        for i in range(3):
            writer.write(b"%d %s\n" % (i, b"y" * 30))
            writer.flush()
    finally:
        writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["one.log"]
    assert path.read_bytes().startswith(b"2 ")


def test_the_file_is_private_and_so_is_a_directory_it_creates(tmp_path: Path) -> None:
    existing = tmp_path / "old.log"
    existing.write_bytes(b"")
    existing.chmod(0o644)
    for path in (tmp_path / "new" / "a.log", existing):
        writer = RotatingFileWriter(path, max_bytes=30, backups=1, interval=3600)
        try:
            writer.write(b"a" * 20 + b"\n")
            writer.flush()
            writer.write(b"b" * 20 + b"\n")  # rotates: the new file is private too
            writer.flush()
        finally:
            writer.close()
        assert _mode(path) == 0o600
        assert _mode(Path(f"{path}.1")) == 0o600
    assert _mode(tmp_path / "new") == 0o700


def test_writing_only_queues_the_thread_writes(tmp_path: Path) -> None:
    path = tmp_path / "q.log"
    # An interval no test waits for: a write that touched the file would show at once.
    writer = RotatingFileWriter(path, max_bytes=0, backups=0, interval=3600)
    try:
        for i in range(100):
            writer.write(b"%d\n" % i)
        assert path.read_bytes() == b""
        writer.flush()
        assert len(path.read_bytes().splitlines()) == 100
    finally:
        writer.close()


def test_every_line_goes_to_the_file_as_json_beside_text_on_the_terminal(tmp_path: Path) -> None:
    out = tmp_path / "stderr"
    path = tmp_path / "logs" / "orders.log"
    with out.open("w") as stream:
        settings = LogFileSettings(log_file=str(path), log_file_max_bytes=0)
        configure_logging(
            "orders", fmt="text", stream=stream, process="orders-0", log_file=settings
        )
        logging.getLogger("tests.file").warning("placed <%s>", "o-1", extra={"order": 7})
        # The access log's direct path writes the file's JSON line too.
        direct = direct_output(logging.getLogger("core.access"), logging.INFO)
        assert direct is not None
        direct.write("core.access", logging.INFO, "GET /x 200", "cid-9", {"status": 200})
        flush_logging()
    text = out.read_text().splitlines()
    assert "WARNING orders-0   placed <o-1>" in text[0]
    assert text[1].endswith("GET /x 200  cid=cid-9")
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first["message"] == "placed <o-1>"
    assert first["process"] == "orders-0"
    assert first["order"] == 7
    assert first["level"] == "WARNING"
    assert second["correlation_id"] == "cid-9"
    assert second["status"] == 200
    assert second["ts"].endswith("+00:00")


def test_json_output_writes_the_same_line_to_the_file(tmp_path: Path) -> None:
    out = tmp_path / "stderr"
    path = tmp_path / "users.log"
    with out.open("w") as stream:
        configure_logging(
            "users", fmt="json", stream=stream, log_file=LogFileSettings(log_file=str(path))
        )
        logging.getLogger("tests.file").info("hello")
        flush_logging()
    assert path.read_text() == out.read_text()
    assert json.loads(path.read_text())["message"] == "hello"


def test_an_in_memory_stream_still_gets_its_file(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    stream = io.StringIO()
    configure_logging(
        "web", fmt="text", stream=stream, log_file=LogFileSettings(log_file=str(path))
    )
    logging.getLogger("tests.file").error("boom")
    flush_logging()
    assert "boom" in stream.getvalue()
    assert json.loads(path.read_text())["level"] == "ERROR"


def test_log_file_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "env.log"
    monkeypatch.setenv("LOG_FILE", str(path))
    monkeypatch.setenv("LOG_FILE_MAX_BYTES", "1000")
    monkeypatch.setenv("LOG_FILE_BACKUPS", "1")
    settings = LogFileSettings()
    assert (settings.log_file, settings.log_file_max_bytes, settings.log_file_backups) == (
        str(path),
        1000,
        1,
    )
    with (tmp_path / "err").open("w") as stream:
        configure_logging("users", fmt="json", stream=stream)
        logging.getLogger("tests.file").warning("from env")
        flush_logging()
    assert "from env" in path.read_text()


def test_the_output_modules_public_parts_are_annotated_and_documented() -> None:
    module = core.log_output
    functions: dict[str, types.FunctionType] = {}
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value):
            assert inspect.getdoc(value), name
            for attr, member in vars(value).items():
                if inspect.isfunction(member) and (attr == "__init__" or not attr.startswith("_")):
                    functions[f"{name}.{attr}"] = member
        elif inspect.isfunction(value):
            functions[name] = value
    unannotated = {
        name
        for name, function in functions.items()
        if "return" not in function.__annotations__
        or any(
            p.annotation is inspect.Parameter.empty
            for p in inspect.signature(function).parameters.values()
            if p.name != "self"
        )
    }
    assert unannotated == set()
    undocumented = {
        name
        for name, function in functions.items()
        if not name.endswith(".__init__") and not function.__doc__
    }
    assert undocumented == set()

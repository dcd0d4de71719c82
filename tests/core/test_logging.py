"""core.logging: a readable line per event on a terminal, a JSON object per event elsewhere."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from core.context import correlation_id
from core.logging import PROCESS_NAME_VAR, configure_logging, log_format
from core.settings import DEV_KEYS_WARNED_VAR, BaseServiceSettings

pytestmark = pytest.mark.unit

TEXT_LINE = re.compile(
    r"^\d\d:\d\d:\d\d\.\d{3} (?P<level>[A-Z]+) +(?P<process>\S+) +(?P<message>.*?)"
    r"(?:  cid=(?P<cid>\S+))?$"
)


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as a developer's stderr does."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """``configure_logging`` replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    access_level = logging.getLogger("aiohttp.access").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(access_level)


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_on_a_terminal_one_readable_line_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROCESS_NAME_VAR, raising=False)
    stream = Terminal()
    configure_logging("users", stream=stream)
    log = logging.getLogger("tests.logging")
    log.info("serving on %s", "http://127.0.0.1:8001")
    token = correlation_id.set("req-42")
    try:
        log.warning("two\nlines")
    finally:
        correlation_id.reset(token)
    log.debug("not at INFO")

    lines = _lines(stream)
    assert len(lines) == 2, lines
    first, second = (TEXT_LINE.match(line) for line in lines)
    assert first is not None, lines
    assert second is not None, lines
    assert first.group("level", "process", "message", "cid") == (
        "INFO",
        "users",
        "serving on http://127.0.0.1:8001",
        None,
    )
    # The line break is escaped: one event never reads as two.
    assert second.group("level", "message", "cid") == ("WARNING", "two\\nlines", "req-42")


def test_a_traceback_follows_its_line_indented() -> None:
    stream = Terminal()
    configure_logging("orders", stream=stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("tests.logging").exception("it failed")
    lines = _lines(stream)
    assert TEXT_LINE.match(lines[0]) is not None
    assert lines[0].endswith("it failed")
    assert lines[1:]
    assert all(line.startswith("    ") for line in lines[1:])
    assert lines[-1].strip() == "RuntimeError: boom"


def test_elsewhere_one_json_object_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROCESS_NAME_VAR, raising=False)
    stream = io.StringIO()  # a pipe or a file: not a terminal
    configure_logging("products", stream=stream)
    token = correlation_id.set("req-7")
    try:
        logging.getLogger("tests.logging").error("lost %d", 3)
    finally:
        correlation_id.reset(token)
    (line,) = _lines(stream)
    event = json.loads(line)
    assert {k: event[k] for k in ("level", "logger", "message", "service", "process")} == {
        "level": "ERROR",
        "logger": "tests.logging",
        "message": "lost 3",
        "service": "products",
        "process": "products",
    }
    assert event["correlation_id"] == "req-7"
    assert "ts" in event


def test_an_explicit_format_wins_over_the_output() -> None:
    terminal = Terminal()
    configure_logging("users", stream=terminal, fmt="json")
    logging.getLogger("tests.logging").warning("as json")
    assert json.loads(terminal.getvalue())["message"] == "as json"

    pipe = io.StringIO()
    configure_logging("users", stream=pipe, fmt="text")
    logging.getLogger("tests.logging").warning("as text")
    match = TEXT_LINE.match(pipe.getvalue().rstrip("\n"))
    assert match is not None
    assert match.group("message") == "as text"


def test_the_process_name_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROCESS_NAME_VAR, "products-1")
    stream = Terminal()
    configure_logging("products", stream=stream)
    logging.getLogger("tests.logging").warning("replica")
    match = TEXT_LINE.match(stream.getvalue().rstrip("\n"))
    assert match is not None
    assert match.group("process") == "products-1"


def test_log_format_is_only_what_was_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    unset = BaseServiceSettings(_env_file=None, env="test")  # type: ignore[call-arg]
    assert log_format(unset) is None  # the output decides
    assert log_format(BaseServiceSettings(_env_file=None, env="test", log_format="json")) == "json"  # type: ignore[call-arg]
    monkeypatch.setenv("LOG_FORMAT", "text")
    assert log_format(BaseServiceSettings(_env_file=None, env="test")) == "text"  # type: ignore[call-arg]


@pytest.mark.parametrize(("warned", "expected"), [(None, 1), ("1", 0)])
def test_the_development_key_warning_is_once_and_not_again_in_children(
    warned: str | None, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process warns once however many settings it loads; not at all when its parent (``aioshop
    up``) says it warned already."""
    for variable in ("JWT_PUBLIC_KEY", "JWT_PRIVATE_KEY", "AIOSHOP_ENV", "HOST"):
        monkeypatch.delenv(variable, raising=False)
    if warned is None:
        monkeypatch.delenv(DEV_KEYS_WARNED_VAR, raising=False)
    else:
        monkeypatch.setenv(DEV_KEYS_WARNED_VAR, warned)
    code = (
        "from core.settings import BaseServiceSettings as S\n"
        "for _ in range(3): S(_env_file=None, env='development')\n"
    )
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stderr.count("public development JWT key pair") == expected, result.stderr


@pytest.mark.parametrize("role", ["users", "gateway"])
def test_what_reading_the_settings_logs_comes_out_in_the_chosen_format(
    role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The development-key warning is logged while the settings are read, before the settings
    can configure logging: it still comes out as JSON when ``LOG_FORMAT=json``."""
    for variable in ("JWT_PUBLIC_KEY", "JWT_PRIVATE_KEY", "AIOSHOP_ENV", DEV_KEYS_WARNED_VAR):
        monkeypatch.delenv(variable, raising=False)
    env = {**os.environ, "LOG_FORMAT": "json", "AIOSHOP_ENV": "development"}
    code = (
        "import sys\n"
        "import core.runner\n"
        "core.runner.run = lambda *a, **k: sys.exit(0)\n"  # read the settings, do not serve
        "from services.cli import main\n"
        f"sys.exit(main(['serve', {role!r}, '--port', '0']))\n"
    )
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    warnings = [
        json.loads(line)
        for line in result.stderr.splitlines()
        if "public development JWT key pair" in line
    ]
    assert len(warnings) == 1, result.stderr
    assert (warnings[0]["level"], warnings[0]["logger"]) == ("WARNING", "core.settings")


def test_the_json_line_carries_extras_once_and_the_traceback() -> None:
    stream = io.StringIO()
    configure_logging("products", fmt="json", stream=stream, process="products-1")
    log = logging.getLogger("test.json")
    log.info("GET %s %s", "/x", 200, extra={"status": 200, "when": object, "path": "/x"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert {k: first[k] for k in ("level", "logger", "message", "service", "process")} == {
        "level": "INFO",
        "logger": "test.json",
        "message": "GET /x 200",
        "service": "products",
        "process": "products-1",
    }
    assert (first["status"], first["path"], first["when"]) == (200, "/x", str(object))
    assert not {"args", "msg", "levelno", "process_name", "exc_info"} & set(first)
    assert first["ts"].endswith("+00:00")
    assert second["exc_info"].startswith("Traceback")
    assert "ValueError: boom" in second["exc_info"]

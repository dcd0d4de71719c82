"""Logs for people and for machines, carrying the correlation id of the request or message.

On a terminal each event is one readable line: time, level, process, message, and the correlation
id when there is one::

    14:03:07.412 INFO    users     serving on http://127.0.0.1:8001
    14:03:09.020 WARNING gateway   attempt on products-0 failed (connect)  cid=9f2c41...

Anywhere else (a file, a pipe, a log collector) each event is one JSON object a line. ``LOG_FORMAT``
(``text`` or ``json``) chooses explicitly; unset, the output decides.

The process name is the role by default (``users``); ``aioshop up`` names each child in
``AIOSHOP_PROCESS`` (``products-1``) so that replicas can be told apart.

When the output is a file descriptor (stderr, as in production), lines are not written one by
one: they are queued and a thread writes them in batches (``LineWriter``), at most
``interval`` seconds after they were logged, and everything queued is written at exit. The access
log, one line a request, may skip ``logging``'s machinery altogether (``direct_output``): the same
line, built and encoded once.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson

from core.context import get_correlation_id
from core.log_output import BufferedHandler, DirectOutput, LineWriter, LogFileSettings
from core.settings import load_settings
from core.tracing import current_ids

__all__ = [
    "PROCESS_NAME_VAR",
    "BufferedHandler",
    "DirectOutput",
    "JsonFormatter",
    "LineWriter",
    "TextFormatter",
    "configure_early_logging",
    "configure_logging",
    "direct_output",
    "flush_logging",
    "log_format",
]

PROCESS_NAME_VAR = "AIOSHOP_PROCESS"

LogFormat = Literal["json", "text"]


class _ContextFilter(logging.Filter):
    """Adds ``service``, ``process`` and ``correlation_id`` to every record, and ``trace_id``
    and ``span_id`` while a span records (``core.tracing``)."""

    def __init__(self, service: str, process: str) -> None:
        super().__init__()
        self.service = service
        self.process_name = process

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.process_name = self.process_name
        if not hasattr(record, "correlation_id"):
            record.correlation_id = get_correlation_id()
        ids = current_ids()
        if ids is not None:
            record.trace_id, record.span_id = ids
        return True


class TextFormatter(logging.Formatter):
    """One line per event for a person: ``time level process message [cid=...] [trace=...]``.

    Line breaks inside the message are escaped, so that an event never looks like several; a
    traceback, when the event has one, follows on its own indented lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line (plus its traceback, if any)."""
        moment = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        process = getattr(record, "process_name", None) or getattr(record, "service", "")
        message = record.getMessage().replace("\r", "\\r").replace("\n", "\\n")
        line = f"{moment}.{int(record.msecs):03d} {record.levelname:<7} {process:<10} {message}"
        correlation = getattr(record, "correlation_id", None)
        if correlation:
            line = f"{line}  cid={correlation}"
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            line = f"{line} trace={trace_id}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = line + "\n" + "\n".join(f"    {row}" for row in record.exc_text.splitlines())
        return line


def log_format(settings: Any) -> LogFormat | None:
    """The format ``settings`` ask for explicitly (``LOG_FORMAT`` in the environment, a file or
    an argument), or ``None``: then ``configure_logging`` lets the output decide."""
    fields_set: set[str] = getattr(settings, "model_fields_set", set())
    if "log_format" not in fields_set:
        return None
    chosen: LogFormat = settings.log_format
    return chosen


# What every LogRecord carries by itself; anything else on a record came from ``extra=``.
_RECORD_FIELDS = frozenset(
    {*vars(logging.LogRecord("", 0, "", 0, "", (), None)), "message", "asctime", "taskName"}
) | {"service", "process_name", "correlation_id", "trace_id", "span_id"}


class JsonFormatter(logging.Formatter):
    """One JSON object per event for a machine: ``level``, ``logger``, ``message``, ``service``,
    ``process``, ``correlation_id``, ``ts`` (UTC, ISO 8601), ``trace_id`` and ``span_id`` while
    a span records, every ``extra=`` field, and ``exc_info``/``stack_info`` when there are.

    Encoded with orjson in one pass: the access log writes one of these per request, and a
    general-purpose JSON log formatter cost about 15 µs of it.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        document: dict[str, Any] = {
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": getattr(record, "service", None),
            "process": getattr(record, "process_name", None),
            "correlation_id": getattr(record, "correlation_id", None),
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id is not None:  # only while a span records
            document["trace_id"] = trace_id
            document["span_id"] = getattr(record, "span_id", None)
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS:
                document[key] = value
        if record.exc_info:
            document["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack_info"] = self.formatStack(record.stack_info)
        return orjson.dumps(document, default=str).decode()


def _json_formatter() -> logging.Formatter:
    return JsonFormatter()


_direct: DirectOutput | None = None


def direct_output(logger: logging.Logger, level: int) -> DirectOutput | None:
    """The output to write an event of ``logger`` at ``level`` to directly, or ``None``.

    ``None`` when the event is not logged at all, when anything but the handler installed by
    ``configure_logging`` would see its record (a handler or filter added since, such as a test's
    log capture), or while a span records (the record's formatter writes its trace id): then the
    caller logs it through ``logging`` as usual.
    """
    direct = _direct
    if direct is None or not logger.isEnabledFor(level):
        return None
    if current_ids() is not None:  # a traced event: its record carries the trace id
        return None
    root = logging.root
    handlers = root.handlers
    if len(handlers) != 1 or handlers[0] is not direct.handler or logger.filters:
        return None
    if level < direct.handler.level or direct.handler.filters[1:]:
        return None
    current: logging.Logger | None = logger
    while current is not None and current is not root:
        if current.handlers or not current.propagate or current.disabled:
            return None
        current = current.parent
    return direct


def flush_logging() -> None:
    """Write every line queued by the root handlers now (off the event loop)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def configure_logging(
    service: str,
    *,
    level: str = "INFO",
    fmt: str | None = None,
    stream: TextIO | None = None,
    process: str | None = None,
    log_file: LogFileSettings | None = None,
) -> None:
    """Route every logger to ``stream`` (stderr by default), one event a line.

    ``fmt``: ``"text"`` (for people), ``"json"`` (for machines), or ``None``: text when the
    stream is a terminal, JSON otherwise. ``process`` names this process in every line (default:
    ``$AIOSHOP_PROCESS``, else ``service``). ``log_file`` (default: ``LOG_FILE`` and its
    rotation settings from the environment) also writes every line, as JSON, to a file.
    """
    global _direct
    stream = sys.stderr if stream is None else stream
    process = process or os.environ.get(PROCESS_NAME_VAR) or service
    if fmt is None:
        fmt = "text" if _is_terminal(stream) else "json"
    formatter = _json_formatter() if fmt == "json" else TextFormatter()
    fd = _file_descriptor(stream)
    file_settings = log_file if log_file is not None else load_settings(LogFileSettings)
    file = file_settings.output(None if fmt == "json" else _json_formatter())
    handler: logging.Handler
    extra: list[logging.Handler] = []
    if fd is None:  # an in-memory stream: written at once
        handler = logging.StreamHandler(stream)
        direct = None
        if file is not None:  # a handler of its own, beside
            extra.append(BufferedHandler(file.writer))
            extra[0].addFilter(_ContextFilter(service, process))
            extra[0].setFormatter(_json_formatter())
    else:
        stream.flush()
        writer = LineWriter(fd, on_dropped=_drop_notice(formatter, service, process))
        handler = BufferedHandler(writer, file=file)
    handler.addFilter(_ContextFilter(service, process))
    handler.setFormatter(formatter)
    if isinstance(handler, BufferedHandler):
        direct = DirectOutput(handler, service=service, process=process, json=fmt == "json")
    root = logging.getLogger()
    previous = root.handlers[:]
    root.handlers[:] = [handler, *extra]
    _direct = direct
    for old in previous:
        if isinstance(old, BufferedHandler):
            old.close()
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _file_descriptor(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation is both
        return None


def _drop_notice(
    formatter: logging.Formatter, service: str, process: str
) -> Callable[[int], bytes]:
    def notice(count: int) -> bytes:
        record = logging.LogRecord(
            "core.logging",
            logging.WARNING,
            __file__,
            0,
            "%d log lines dropped: the output does not keep up",
            (count,),
            None,
        )
        _ContextFilter(service, process).filter(record)
        return formatter.format(record).encode("utf-8", "backslashreplace") + b"\n"

    return notice


def configure_early_logging(service: str) -> None:
    """Logging for the moments before the settings are read (what reading them logs, such as
    the development-key warning, must come out in the same format): ``LOG_LEVEL`` and
    ``LOG_FORMAT`` straight from the environment, their defaults where they are not valid."""
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    if not isinstance(logging.getLevelName(level), int):
        level = "INFO"
    fmt = os.environ.get("LOG_FORMAT", "").lower()
    configure_logging(service, level=level, fmt=fmt if fmt in ("text", "json") else None)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False

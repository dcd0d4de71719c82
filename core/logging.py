"""Structured JSON logs that carry the correlation id of the request or message being handled."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from core.context import get_correlation_id

__all__ = ["configure_logging"]


class _ContextFilter(logging.Filter):
    """Adds ``service`` and ``correlation_id`` to every record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        if not hasattr(record, "correlation_id"):
            record.correlation_id = get_correlation_id()
        return True


def configure_logging(service: str, *, level: str = "INFO", fmt: str = "json") -> None:
    """Route every logger to stderr, one JSON object a line (``fmt="text"`` for humans)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter(service))
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "{levelname}{name}{message}{service}{correlation_id}",
                style="{",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp="ts",
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(service)s %(name)s [%(correlation_id)s] %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

"""Diagnosing a start-up that failed on a server: one line that says which server could not be
reached or used, where (password censored) and what to check, instead of a traceback."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from types import TracebackType

from pydantic import AliasChoices, ValidationError
from pydantic_settings import SettingsError

from core.settings import BaseServiceSettings
from core.urls import censor_url

__all__ = ["StartupFailed", "censor_url", "describe_unreachable", "startup_failure"]

log = logging.getLogger("services.cli")


class StartupFailed(Exception):
    """A command could not start: ``str(exc)`` is the one line that says why."""


# (top-level package of a client library, the server it talks to, the settings field of its URL)
_SERVERS: tuple[tuple[str, str, str], ...] = (
    ("asyncpg", "PostgreSQL", "database_url"),
    ("psycopg", "PostgreSQL", "database_url"),
    ("redis", "Redis", "redis_url"),
    ("aiormq", "RabbitMQ", "amqp_url"),
    ("aio_pika", "RabbitMQ", "amqp_url"),
    ("pymongo", "MongoDB", "mongodb_url"),
    ("motor", "MongoDB", "mongodb_url"),
    ("aiomcache", "memcached", "memcached_url"),
)
_CONNECTION_ERRORS = {
    "ConnectionError",
    "TimeoutError",
    "AuthenticationError",
    "AMQPConnectionError",
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _package(module: object) -> str:
    return str(module or "").partition(".")[0]


def _frames(tb: TracebackType | None) -> Iterator[str]:
    while tb is not None:
        yield _package(tb.tb_frame.f_globals.get("__name__"))
        tb = tb.tb_next


def _server_of(exc: BaseException) -> tuple[str, str] | None:
    """(server, settings field) of the client library that raised ``exc``, if it is one."""
    known = {package: (server, field) for package, server, field in _SERVERS}
    for error in _chain(exc):
        found = known.get(_package(type(error).__module__))
        if found is not None:
            return found
    for error in _chain(exc):
        if isinstance(error, OSError):  # raised by the socket layer: whose call was it?
            for package in reversed(list(_frames(error.__traceback__))):
                if package in known:
                    return known[package]
    return None


_UNREACHABLE = "cannot reach {server}{where} ({detail}); check that it is running there and {var}"


def _reason(exc: BaseException) -> str | None:
    """The message template (``{server}``, ``{where}``, ``{var}``) for an ``exc`` that means a
    server could not be reached or would not let this process in; ``None`` for anything else."""
    for error in _chain(exc):
        sqlstate = str(getattr(error, "sqlstate", "") or "")
        if sqlstate == "3D000":
            return (
                "{server}{where} has no such database; run `aioshop migrate` (it creates it) "
                "or check {var}"
            )
        if sqlstate.startswith("28"):
            return "{server}{where} refused the user name or password; check {var}"
        if sqlstate in ("57P03", "53300") or sqlstate.startswith("08"):
            return "{server}{where} does not take connections now; check the server and {var}"
        if isinstance(error, ConnectionRefusedError):
            return _UNREACHABLE.replace("{detail}", "connection refused")
        if isinstance(error, socket.gaierror):
            return "cannot reach {server}{where} (unknown host name); check {var}"
        if isinstance(error, TimeoutError):
            return _UNREACHABLE.replace("{detail}", "no answer in time")
        names = {cls.__name__ for cls in type(error).__mro__}
        if "AuthenticationError" in names:
            return "{server}{where} refused the password; check {var}"
        if isinstance(error, OSError) or names & _CONNECTION_ERRORS:
            detail = error.strerror if isinstance(error, OSError) and error.strerror else None
            return _UNREACHABLE.replace("{detail}", (detail or "cannot connect").lower())
    return None


def _variable(settings: BaseServiceSettings, field: str) -> str:
    info = type(settings).model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0].upper()
    if isinstance(alias, str):
        return alias.upper()
    return field.upper()


def describe_unreachable(exc: BaseException, settings: BaseServiceSettings | None) -> str | None:
    """One line for a start-up that failed on a server it could not reach or use: which server,
    where (password censored), what to check; ``None`` if ``exc`` is no such failure."""
    server = _server_of(exc)
    reason = _reason(exc)
    if server is None or reason is None:
        return None
    name, field = server
    url = getattr(settings, field, None) if settings is not None else None
    where = f" at {censor_url(str(url))}" if url else ""
    variable = _variable(settings, field) if settings is not None else field.upper()
    return reason.format(server=name, where=where, var=variable)


def startup_failure(
    exc: Exception, settings: BaseServiceSettings | Callable[[], BaseServiceSettings]
) -> StartupFailed | None:
    """``StartupFailed`` with the line of ``describe_unreachable``, or ``None`` (``settings``:
    loaded only when needed)."""
    if _server_of(exc) is None or _reason(exc) is None:
        return None
    loaded: BaseServiceSettings | None
    try:
        loaded = settings() if callable(settings) else settings
    except (ValidationError, SettingsError):  # pragma: no cover: they loaded once already
        loaded = None
    line = describe_unreachable(exc, loaded)
    if line is None:  # pragma: no cover: checked above
        return None
    log.debug("start-up failed", exc_info=exc)
    return StartupFailed(line)

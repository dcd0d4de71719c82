"""The broker's definitions (exchanges, queues, bindings, policies, users, vhosts) as JSON.

Tried in order: the RabbitMQ management API (``GET /api/definitions``), then ``rabbitmqctl
export_definitions`` when the broker runs on this machine (``rabbitmqctl`` speaks to the local
node only). When neither works, the backup records why instead: the services declare their own
exchange and queues when they start, so a broker restored without its definitions gets the
topology back at the first start, but not what an operator added by hand (policies, users,
permissions, vhosts), and never the messages that were in its queues (definitions hold no
messages either way).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from core.settings import is_loopback
from services.backup.postgres import BackupError, run_tool

__all__ = ["Definitions", "export_definitions", "management_url"]

MANAGEMENT_PORT = 15672


@dataclass(frozen=True, slots=True)
class Definitions:
    """Exported definitions (``body``), where they came from, or ``None`` and why not."""

    body: bytes | None
    source: str | None
    reason: str | None


def management_url(amqp_url: str, configured: str | None) -> str:
    """The management API's base URL: ``configured`` if set, else the AMQP host on port 15672
    with the AMQP URL's credentials (its user and password are the broker's, and the only
    default password is ``AMQP_URL``'s development ``guest:guest``)."""
    if configured:
        return configured.rstrip("/")
    parts = urlsplit(amqp_url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    userinfo = ""
    if parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "")
        userinfo += "@"
    return urlunsplit(("http", f"{userinfo}{host}:{MANAGEMENT_PORT}", "", "", ""))


async def _from_management(base: str, tool_timeout: float) -> bytes:
    parts = urlsplit(base)
    headers = {}
    if parts.username is not None:
        headers["Authorization"] = aiohttp.encode_basic_auth(
            unquote(parts.username), unquote(parts.password or "")
        )
    netloc = parts.netloc.rpartition("@")[2]
    url = urlunsplit(parts._replace(netloc=netloc, path=parts.path + "/api/definitions"))
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=tool_timeout)) as session,
        session.get(url, headers=headers) as response,
    ):
        if response.status != 200:
            raise BackupError(f"the management API answered {response.status}")
        return await response.read()


def _valid(body: bytes) -> bytes:
    try:
        definitions = json.loads(body)
    except ValueError as exc:
        raise BackupError(f"not JSON: {exc}") from exc
    if not isinstance(definitions, dict) or "rabbit_version" not in definitions:
        raise BackupError("not RabbitMQ definitions")
    return body


async def export_definitions(
    amqp_url: str, configured_management_url: str | None, *, tool_timeout: float = 30.0
) -> Definitions:
    """The broker's definitions by the first way that works; never raises."""
    failures = []
    base = management_url(amqp_url, configured_management_url)
    try:
        body = _valid(await _from_management(base, tool_timeout))
        return Definitions(body=body, source="management-api", reason=None)
    except (aiohttp.ClientError, TimeoutError, OSError, BackupError) as exc:
        where = urlsplit(base).netloc.rpartition("@")[2]
        failures.append(f"management API at {where}: {exc.__class__.__name__} {exc}".strip())
    host = urlsplit(amqp_url).hostname or ""
    if await asyncio.to_thread(shutil.which, "rabbitmqctl") is None:
        failures.append("rabbitmqctl: not installed here")
    elif not is_loopback(host):
        failures.append(f"rabbitmqctl: the broker ({host}) is not on this machine")
    else:
        try:
            body = _valid(
                await run_tool(
                    "rabbitmqctl", ["export_definitions", "-"], env={}, tool_timeout=tool_timeout
                )
            )
            return Definitions(body=body, source="rabbitmqctl", reason=None)
        except BackupError as exc:
            failures.append(f"rabbitmqctl: {exc}")
    return Definitions(body=None, source=None, reason="; ".join(failures))

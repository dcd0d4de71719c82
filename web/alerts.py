"""Alerts from Alertmanager on the dashboard: its webhook, and the alerts firing now.

Alertmanager posts a notification (version 4 of its webhook payload) to
``POST /dashboard/api/alerts`` whenever a group of alerts fires, changes or resolves
(``send_resolved``). The dashboard keeps the firing ones in memory (``AlertBook``), by
fingerprint, and drops those that resolved; the view shows them as a banner (how many, the
worst severity) and a list (name, severity, since when; for an operator also the instance,
summary, description and a link to the graph).

A firing alert is also forgotten ``ALERT_TTL`` after the last notification that named it (or
at its ``endsAt``, when a sender gives one: Alertmanager shows ``endsAt`` only once an alert
resolved, the zero time ``0001-01-01`` while it fires), so that a lost resolve, a restarted
Alertmanager or a dashboard replica the resolve did not reach leave no alert forever.
Alertmanager re-sends a firing alert every ``repeat_interval`` (plus up to one
``group_interval``): its routing keeps that well under ``ALERT_TTL``
(``deploy/alertmanager/alertmanager.yml``, ``services.monitoring``).

The endpoint needs ``Authorization: Bearer <DASHBOARD_ALERTS_TOKEN>`` (compared in constant
time); with no token configured it does not exist (404). ``aioshop up --monitoring`` generates
the token into its data directory and gives it to both sides.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from aiohttp import hdrs, web
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from core.errors import BadRequest, NotFound, PayloadTooLarge, Unauthorized, ValidationFailed
from core.schemas import dump_errors
from web.values import iso

__all__ = [
    "ALERT_TTL",
    "MAX_ALERTS",
    "MAX_BODY",
    "Alert",
    "AlertBook",
    "Notification",
    "alerts_handler",
]

MAX_BODY = 512 * 1024  # bytes of one notification
MAX_ALERTS = 500  # firing alerts kept; more are counted, not listed
ALERT_TTL = timedelta(minutes=20)  # a firing alert not notified again for this long is dropped
SEVERITIES = ("critical", "warning", "info")  # worst first


class Alert(BaseModel):
    """One alert of a notification (the fields the dashboard reads; others are ignored)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    annotations: dict[str, str] = Field(default_factory=dict, max_length=64)
    starts_at: AwareDatetime = Field(alias="startsAt")
    ends_at: AwareDatetime | None = Field(default=None, alias="endsAt")
    generator_url: str | None = Field(default=None, alias="generatorURL", max_length=4096)
    fingerprint: str = Field(min_length=1, max_length=64)

    @field_validator("labels", "annotations")
    @classmethod
    def _short_values(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if len(key) > 256 or len(text) > 4096:
                raise ValueError("a label or annotation is too long")
        return value

    @field_validator("generator_url")
    @classmethod
    def _web_link(cls, value: str | None) -> str | None:
        # Only a web address becomes a link on the page (never javascript: or data:).
        if value is None or not value.lower().startswith(("http://", "https://")):
            return None
        return value


class Notification(BaseModel):
    """Alertmanager's webhook payload (version 4)."""

    model_config = ConfigDict(extra="ignore")

    version: str = Field(max_length=8)
    status: Literal["firing", "resolved"]
    receiver: str = Field(default="", max_length=256)
    alerts: list[Alert] = Field(max_length=1000)


@dataclass(slots=True)
class _Kept:
    alert: Alert
    expires: datetime


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AlertBook:
    """The alerts firing now, by fingerprint; ``view`` is what the dashboard shows.

    A firing alert is kept until a notification resolves it, or until ``ttl`` after the last
    notification that named it (its ``endsAt`` when that is sooner); ``clock`` tells the time
    (tests give their own)."""

    def __init__(
        self,
        limit: int = MAX_ALERTS,
        *,
        ttl: timedelta = ALERT_TTL,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.limit = limit
        self.ttl = ttl
        self._clock = clock
        self._firing: dict[str, _Kept] = {}
        self.received = 0
        self.dropped = 0  # firing alerts not kept because the book was full
        self.expired = 0  # firing alerts forgotten without a resolve

    @property
    def firing(self) -> dict[str, Alert]:
        """The alerts firing now (not past their expiry), by fingerprint."""
        self._expire(self._clock())
        return {fingerprint: kept.alert for fingerprint, kept in self._firing.items()}

    def apply(self, notification: Notification) -> None:
        """Take one notification: firing alerts are added or refreshed, resolved ones removed."""
        self.received += 1
        now = self._clock()
        self._expire(now)
        for alert in notification.alerts:
            expires = now + self.ttl
            if alert.ends_at is not None and alert.ends_at.year > 1:  # year 1: not given
                expires = min(expires, alert.ends_at)
            if alert.status == "resolved" or expires <= now:
                self._firing.pop(alert.fingerprint, None)
            elif alert.fingerprint in self._firing or len(self._firing) < self.limit:
                self._firing[alert.fingerprint] = _Kept(alert, expires)
            else:
                self.dropped += 1

    def view(self, *, full: bool = False) -> dict[str, Any]:
        """Count, worst severity and the list, worst and oldest first. ``full=False`` (the
        public view) gives only names, severities and since when: instances, links and the
        annotations (a summary names its instance) stay out."""
        alerts = sorted(self.firing.values(), key=lambda a: (_rank(a), a.starts_at))
        worst = _severity(alerts[0]) if alerts else None
        return {
            "firing": len(alerts),
            "worst": worst,
            "dropped": self.dropped,
            "alerts": [_alert_view(alert, full) for alert in alerts],
        }

    def _expire(self, now: datetime) -> None:
        stale = [key for key, kept in self._firing.items() if kept.expires <= now]
        for key in stale:
            del self._firing[key]
        self.expired += len(stale)


def _severity(alert: Alert) -> str:
    return alert.labels.get("severity", "unknown")


def _rank(alert: Alert) -> int:
    severity = _severity(alert)
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def _alert_view(alert: Alert, full: bool) -> dict[str, Any]:
    labels = alert.labels
    item: dict[str, Any] = {
        "name": labels.get("alertname", "unnamed"),
        "severity": _severity(alert),
        "since": iso(alert.starts_at),
    }
    if full:
        item["job"] = labels.get("job")
        item["instance"] = labels.get("instance")
        item["summary"] = alert.annotations.get("summary", "")
        item["runbook"] = alert.annotations.get("runbook")
        item["description"] = alert.annotations.get("description", "")
        item["graph"] = alert.generator_url
        item["fingerprint"] = alert.fingerprint
    return item


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, up to ``limit`` bytes, chunked or not (``read(n)`` returns what has
    arrived so far, not ``n`` bytes); ``PayloadTooLarge`` beyond."""
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"An alert notification is at most {limit} bytes")
    return bytes(body)


def alerts_handler(
    book: AlertBook, token: SecretStr | None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The webhook's handler: authenticated, size-limited, validated into ``book``."""

    async def receive(request: web.Request) -> web.Response:
        if token is None or not token.get_secret_value():
            raise NotFound("No alert receiver is configured (DASHBOARD_ALERTS_TOKEN)")
        if not _authorized(request, token.get_secret_value()):
            raise Unauthorized("A valid alert receiver token is required")
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise PayloadTooLarge(f"An alert notification is at most {MAX_BODY} bytes")
        body = await _read_body(request, MAX_BODY)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest("The body is not JSON") from exc
        try:
            notification = Notification.model_validate(data)
        except ValidationError as exc:
            raise ValidationFailed(dump_errors(exc.errors())) from exc
        book.apply(notification)
        return web.json_response({"firing": len(book.firing)})

    return receive

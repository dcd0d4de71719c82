"""Small value helpers shared by the dashboard state's parts (``web.state`` and its modules)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["iso", "number"]


def iso(moment: datetime) -> str:
    """``moment`` as ISO 8601 in UTC, with a ``Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def number(value: Any) -> float | None:
    """``value`` as a float when it is a number (not a bool), else None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

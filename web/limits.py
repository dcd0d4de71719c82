"""How long and how much the dashboard state keeps, and when an instance counts as unwell."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StateLimits"]


@dataclass(frozen=True, slots=True)
class StateLimits:
    """How long and how much the state keeps (from the web settings)."""

    retention: float = 600.0
    stale_after: float = 3.0
    down_after: float = 10.0
    error_ratio: float = 0.05
    orders: int = 50
    events: int = 100

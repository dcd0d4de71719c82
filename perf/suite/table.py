"""The rows of the benchmark table and how they print (Markdown, so docs can hold them as is)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Row", "render"]


@dataclass
class Row:
    """One line of the table.

    ``ratio`` is to the row's baseline (``baseline`` names it: the bare aiohttp ceiling for HTTP
    rows, raw aiormq for the bus, the peer libraries for the cache); ``target`` says what the
    issue asks of this row and ``met`` whether this run met it (``None``: no target)."""

    group: str
    name: str
    throughput: float | None = None
    unit: str = "req/s"
    p50_ms: float | None = None
    p99_ms: float | None = None
    ratio: float | None = None
    baseline: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready data."""
        return asdict(self)


def _number(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def _verdict(row: Row) -> str:
    if not row.target:
        return ""
    mark = "met" if row.met else "**not met**" if row.met is False else "not measured"
    return f"{row.target}: {mark}"


def render(rows: Iterable[Row]) -> str:
    """The rows as one Markdown table, grouped in the order given."""
    lines = [
        "| group | row | throughput | p50 ms | p99 ms | ratio | target | notes |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        throughput = f"{_number(row.throughput)} {row.unit}" if row.throughput is not None else "-"
        ratio = f"{row.ratio:.2f}x {row.baseline}" if row.ratio is not None else ""
        lines.append(
            f"| {row.group} | {row.name} | {throughput} | {_number(row.p50_ms, 2)} "
            f"| {_number(row.p99_ms, 2)} | {ratio} | {_verdict(row)} | {row.note} |"
        )
    return "\n".join(lines)

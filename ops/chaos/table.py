"""The chaos run's one table: a row per fault (and the baseline and the end), as Markdown for
the terminal and as JSON beside it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.chaos.load import Window
from ops.invariants import Violation

__all__ = ["Row", "markdown", "write"]


@dataclass
class Row:
    """One fault's figures: the window spans the fault and the recovery after it."""

    fault: str
    duration: float  # seconds the fault lasted
    window: Window
    recovery: float | None  # seconds from its end to the first normal answer; None: never
    violations: list[Violation] = field(default_factory=list)
    note: str = ""
    key: str = ""  # the fault's key (``ops.chaos.faults``); empty for the other rows

    @property
    def failed(self) -> bool:
        """Whether the row is a failure of the run (an invariant broken, no recovery)."""
        return bool(self.violations) or self.recovery is None

    def as_json(self) -> dict[str, Any]:
        """The row as JSON."""
        return {
            "fault": self.fault,
            "key": self.key,
            "duration_s": round(self.duration, 1),
            "requests": self.window.requests,
            "failed": self.window.failed,
            "errors_by_status": {str(k): v for k, v in sorted(self.window.failures.items())},
            "failures": [
                {"status": status, "request": name, "said": detail, "count": count}
                for (status, name, detail), count in self.window.reasons.most_common(10)
            ],
            "recovery_s": None if self.recovery is None else round(self.recovery, 1),
            "violations": [{"invariant": v.invariant, "detail": v.detail} for v in self.violations],
            "note": self.note,
        }


def _violations(row: Row) -> str:
    if not row.violations:
        return "0"
    return f"{len(row.violations)}: " + ", ".join(v.invariant for v in row.violations)


def markdown(rows: list[Row]) -> str:
    """The table, and under it each violation's detail and each note."""
    lines = [
        "| fault | duration s | requests | client errors by status | recovery s "
        "| invariant violations |",
        "|---|--:|--:|---|--:|---|",
    ]
    for row in rows:
        recovery = "not recovered" if row.recovery is None else f"{row.recovery:.1f}"
        lines.append(
            f"| {row.fault} | {row.duration:.1f} | {row.window.requests} | "
            f"{row.window.errors()} | {recovery} | {_violations(row)} |"
        )
    notes = [
        f"- {row.fault}: {v.invariant}: {v.detail}" for row in rows for v in row.violations
    ] + [f"- {row.fault}: {row.note}" for row in rows if row.note]
    return "\n".join(lines + (["", *notes] if notes else []))


def write(rows: list[Row], folder: Path, stamp: str, meta: dict[str, Any]) -> tuple[Path, Path]:
    """Save the table as ``chaos-STAMP.md`` and ``chaos-STAMP.json`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / f"chaos-{stamp}.md"
    data = folder / f"chaos-{stamp}.json"
    text.write_text(markdown(rows) + "\n", encoding="utf-8")
    payload = {**meta, "rows": [row.as_json() for row in rows]}
    data.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return text, data

"""What the table was measured on: cores, CPU, memory, Python, key packages, the date."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Machine", "describe_machine"]

PACKAGES = (
    "aiohttp",
    "uvloop",
    "asyncpg",
    "redis",
    "aiomcache",
    "aiormq",
    "pydantic",
    "orjson",
    "fastapi",
    "uvicorn",
    "cashews",
    "aiocache",
    "locust",
)


@dataclass(frozen=True)
class Machine:
    """The facts printed above the table."""

    date: str
    cores: int
    cpu: str
    memory_gb: float
    system: str
    python: str
    load_tool: str
    packages: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The facts as Markdown list items."""
        versions = ", ".join(f"{name} {version}" for name, version in self.packages.items())
        return [
            f"- date: {self.date}",
            f"- machine: {self.cores} cores ({self.cpu}), {self.memory_gb:.1f} GB, {self.system}",
            f"- Python {self.python}; load from {self.load_tool}",
            f"- packages: {versions}",
        ]


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown CPU"


def _memory_gb() -> float:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return 0.0
    match = re.search(r"^MemTotal:\s*(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024 / 1024 if match else 0.0


def _wrk_version() -> str:
    if not shutil.which("wrk"):
        return (
            "the Python fallback generator (wrk is not installed: slower, see perf/suite/load.py)"
        )
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout + done.stderr).strip().splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def describe_machine() -> Machine:
    """The machine this process runs on, now."""
    packages: dict[str, str] = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return Machine(
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cores=affinity or os.cpu_count() or 1,
        cpu=_cpu_model(),
        memory_gb=_memory_gb(),
        system=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        load_tool=_wrk_version(),
        packages=packages,
    )

"""The steady load of the chaos run: Locust, headless, in a process of its own.

``Load`` starts ``locust -f ops/chaos/locustfile.py`` (the mixed traffic of
``perf/locustfile.py``: browsing, search, sign-ups and logins, orders with cancellations, an
admin restocking) against the gateway and reads the request log it writes; ``window(start,
end)`` counts the requests that started in that span and their failures by status.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from perf.suite.system import stop_process

__all__ = ["Load", "Window"]

TIMES = "\N{MULTIPLICATION SIGN}"
LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass
class Window:
    """The requests of a span of time: how many, and the failures by status (0: no answer)."""

    requests: int = 0
    failures: Counter[int] = field(default_factory=Counter)
    # Each failure's status, route and what the answer said (its problem's detail): the why.
    reasons: Counter[tuple[int, str, str]] = field(default_factory=Counter)
    first: float | None = None  # when its first request started
    last: float | None = None

    @property
    def span(self) -> float:
        """Seconds from its first request to its last."""
        return 0.0 if self.first is None or self.last is None else self.last - self.first

    @property
    def failed(self) -> int:
        """How many failed."""
        return sum(self.failures.values())

    def errors(self) -> str:
        """``"503x12, 502x1"`` with a multiplication sign (most frequent first; ``conn`` for no
        answer), or ``"none"``."""
        if not self.failures:
            return "none"
        return ", ".join(
            f"{'conn' if status == 0 else status}{TIMES}{count}"
            for status, count in sorted(self.failures.items(), key=lambda kv: (-kv[1], kv[0]))
        )


class Load:
    """A Locust run against ``host`` with ``users`` simulated users until ``stop``."""

    def __init__(
        self, host: str, *, users: int, workdir: Path, env: dict[str, str], think: float
    ) -> None:
        self.host = host
        self.users = users
        self.log = workdir / "requests.log"
        self.output = workdir / "locust.log"
        self.env = {**env, "CHAOS_REQUEST_LOG": str(self.log), "AIOSHOP_LOAD_THINK": str(think)}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start Locust (all users spawned within a few seconds)."""
        self.log.touch()
        command = [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
            "--only-summary", "--host", self.host, "--users", str(self.users),
            "--spawn-rate", str(max(1, self.users // 3)), "--stop-timeout", "5",
            "--loglevel", "WARNING",
        ]  # fmt: skip
        with self.output.open("ab") as output:
            self.process = subprocess.Popen(  # nosec B603: our own command line
                command, env=self.env, stdout=output, stderr=subprocess.STDOUT
            )

    @property
    def running(self) -> bool:
        """Whether Locust runs."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop Locust (its users finish their request) and wait for it."""
        if self.process is not None:
            stop_process(self.process, timeout=30)

    def window(self, start: float, end: float) -> Window:
        """The requests that started in ``[start, end)`` (Unix times)."""
        window = Window()
        with self.log.open(encoding="utf-8") as lines:
            for line in lines:
                parts = line.rstrip("\n").split(" ", 3)
                if len(parts) < 3:
                    continue  # a line being written
                try:
                    started, status = float(parts[0]), int(parts[1])
                except ValueError:
                    continue
                if start <= started < end:
                    window.requests += 1
                    window.first = min(started, window.first or started)
                    window.last = max(started, window.last or started)
                    if parts[2] == "fail":
                        window.failures[status] += 1
                        name, _, detail = (parts[3] if len(parts) > 3 else "").partition("\t")
                        window.reasons[(status, name, detail)] += 1
        return window

"""HTTP load for the benchmark table: wrk from its own process, or a Python fallback that says so.

``run_load`` drives one URL for a bounded time with a closed loop of ``connections`` (or, with
``rate``, paced: each connection waits between requests so that all together aim at ``rate``
requests per second) and returns a ``LoadResult``. wrk (one thread: the server under test keeps
the other core of a small machine) reports through a Lua ``done`` hook that prints one JSON
line; without wrk the same figures come from ``python -m perf.suite.pyload`` in a separate
process, and ``LoadResult.tool`` says which one measured.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LoadResult", "Request", "load_tool", "run_load"]

MARK = "LOADJSON "  # the prefix of the one line either tool prints with its figures
WRK_THREADS = 1


@dataclass(frozen=True)
class Request:
    """What every request of a run sends (``paths``, ``bodies``: each request picks one at
    random instead of the URL's own path, or the body)."""

    url: str
    method: str = "GET"
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    paths: tuple[str, ...] = ()
    bodies: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadResult:
    """What one run measured: completed requests per second, latency percentiles, failures."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str

    @property
    def rps(self) -> float:
        """Completed requests per second, failed ones included (``errors`` counts them)."""
        return self.requests / self.seconds if self.seconds else 0.0


def load_tool() -> str:
    """``wrk`` when it is on the PATH, else ``python`` (the fallback generator)."""
    return "wrk" if shutil.which("wrk") else "python"


def _lua(request: Request, delay_ms: float | None) -> str:
    lines = [f"wrk.method = {json.dumps(request.method)}"]
    if request.body:
        lines.append(f"wrk.body = {json.dumps(request.body)}")
    for name, value in request.headers.items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    if delay_ms is not None:
        lines.append(f"function delay() return {delay_ms:.3f} end")
    if request.paths or request.bodies:
        paths = ", ".join(json.dumps(path) for path in request.paths)
        bodies = ", ".join(json.dumps(body) for body in request.bodies)
        lines += [
            f"local paths = {{{paths}}}",
            f"local bodies = {{{bodies}}}",
            "function request()",
            "  local path = #paths > 0 and paths[math.random(#paths)] or nil",
            "  local body = #bodies > 0 and bodies[math.random(#bodies)] or nil",
            "  return wrk.format(nil, path, nil, body)",
            "end",
        ]
    lines.append(
        "function done(summary, latency, requests)\n"
        "  local e = summary.errors\n"
        f'  io.write(string.format("{MARK}{{\\"requests\\":%.0f,\\"us\\":%.0f,'
        '\\"p50_us\\":%.0f,\\"p99_us\\":%.0f,\\"errors\\":%.0f}\\n",'
        " summary.requests, summary.duration, latency:percentile(50),"
        " latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))\n"
        "end"
    )
    return "\n".join(lines) + "\n"


def _parse(output: str, tool: str) -> LoadResult:
    for line in output.splitlines():
        if line.startswith(MARK):
            figures = json.loads(line.removeprefix(MARK))
            return LoadResult(
                requests=int(figures["requests"]),
                seconds=figures["us"] / 1e6,
                p50_ms=figures["p50_us"] / 1000,
                p99_ms=figures["p99_us"] / 1000,
                errors=int(figures["errors"]),
                tool=tool,
            )
    raise RuntimeError(f"{tool} printed no figures:\n{output[-2000:]}")


def run_load(
    request: Request,
    *,
    seconds: float,
    connections: int,
    rate: float | None = None,
    tool: str | None = None,
) -> LoadResult:
    """Load ``request`` for ``seconds`` from a separate process and return what it measured.

    ``rate`` paces the run (requests per second over all connections; the delay does not count
    the request's own latency, so the achieved rate is a little under it: ``LoadResult.rps``
    says what it was)."""
    tool = tool or load_tool()
    delay_ms = connections * 1000 / rate if rate else None
    timeout = seconds + 30
    if tool == "wrk":
        with tempfile.TemporaryDirectory(prefix="aioshop-bench-") as scratch:
            script = Path(scratch, "request.lua")
            script.write_text(_lua(request, delay_ms))
            command = [
                "wrk",
                f"-t{WRK_THREADS}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                request.url,
            ]
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
    else:
        command = [
            sys.executable,
            "-m",
            "perf.suite.pyload",
            request.url,
            "--method",
            request.method,
            "--body",
            request.body,
            "--seconds",
            str(seconds),
            "--connections",
            str(connections),
            *(["--delay-ms", str(delay_ms)] if delay_ms is not None else []),
            *[arg for path in request.paths for arg in ("--path", path)],
            *[arg for body in request.bodies for arg in ("--bodies", body)],
            *[arg for name, value in request.headers.items() for arg in ("-H", f"{name}: {value}")],
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    return _parse(done.stdout + done.stderr, tool)

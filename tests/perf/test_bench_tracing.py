"""perf/bench_tracing.py runs its three servers and prints each beside the baseline."""

from __future__ import annotations

import pytest

from perf import bench_tracing


def test_the_tracing_benchmark_prints_every_server_beside_the_baseline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert bench_tracing.main(["--duration", "0.5", "--connections", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"baseline: {bench_tracing.BASELINE}")
    rows = {line.split("  ")[0]: line for line in out.splitlines()[2:5]}
    assert set(rows) == {"bare aiohttp", "core app, tracing off", "core app, tracing on"}
    assert rows["bare aiohttp"].split()[3] == "1.00"  # x base of the baseline itself
    assert "µs of server time per request" in out.splitlines()[-1]

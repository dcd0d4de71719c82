"""The gateway's and the dashboard's entry points refuse the development key on a reachable
address (a process binding a real interface)."""

import os
import subprocess
import sys

import pytest

from tests.core.test_settings import ANY_HOST, ROOT


@pytest.mark.parametrize("module", ["gateway", "web"])
def test_the_entry_points_refuse_a_reachable_host_in_one_line(module: str) -> None:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("AIOSHOP", "JWT_"))
    }
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", module, "--host", ANY_HOST],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("invalid settings: refusing the public development JWT key pair")
    assert "Traceback" not in result.stderr

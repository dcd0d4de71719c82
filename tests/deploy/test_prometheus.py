"""The monitoring configuration checked by Prometheus's own tools: the shipped configuration and
the one ``aioshop up --monitoring`` generates (``promtool check config``), the rules
(``promtool check rules``), every alert's unit tests (``promtool test rules``), Alertmanager's
configuration (``amtool check-config``), that no alert goes without a test, and that both
Alertmanager configurations re-send a firing alert before the dashboard forgets it.

CI installs the tools: ``apt-get install prometheus prometheus-alertmanager``. Without them
these tests skip, except where ``CI`` is set: there they fail, so that CI cannot pass without
having checked anything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from services.monitoring import (
    DEPLOY,
    MonitoringSettings,
    TargetsFile,
    _alertmanager_config,
    prometheus_config,
    with_monitoring,
)
from services.up import Process
from web.alerts import ALERT_TTL

PROMETHEUS = DEPLOY / "prometheus"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))


def missing_tools(what: str) -> None:
    """Skip the test for want of ``what`` (a monitoring binary); fail instead where ``CI`` is
    set, where the tools must be installed."""
    message = f"{what} not installed: apt-get install prometheus prometheus-alertmanager"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: the monitoring tests must run)")
    pytest.skip(message)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing_tools(name)
    assert path is not None
    return path


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    unit = next(u for u in ("ms", "s", "m", "h") if duration.endswith(u))
    return float(duration.removesuffix(unit)) * units[unit]


def _repeated_within(route: dict[str, str]) -> float:
    # Alertmanager checks repeat_interval when it flushes a group (every group_interval).
    return _seconds(route["repeat_interval"]) + _seconds(route["group_interval"])


def _run(*cmd: str, cwd: Path | None = None) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)  # noqa: S603
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _alerts() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS / "rules" / "alerts.yml").read_text())
    return [r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r]


def test_the_shipped_configuration_is_valid() -> None:
    _run(_tool("promtool"), "check", "config", "prometheus.yml", cwd=PROMETHEUS)


def test_the_rules_are_valid() -> None:
    output = _run(_tool("promtool"), "check", "rules", *map(str, (PROMETHEUS / "rules").glob("*")))
    assert "SUCCESS: 9 rules found" in output


@pytest.mark.parametrize("test_file", TESTS, ids=[t.stem for t in TESTS])
def test_the_rule_unit_tests_pass(test_file: Path) -> None:
    _run(_tool("promtool"), "test", "rules", test_file.name, cwd=test_file.parent)


def test_every_alert_has_a_test_where_it_fires_and_one_where_it_does_not() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for test_file in TESTS:
        for case in yaml.safe_load(test_file.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = _alerts()
    assert len(alerts) == 9
    assert set(alerts) <= fires, sorted(set(alerts) - fires)
    assert set(alerts) <= quiet, sorted(set(alerts) - quiet)


def test_every_alert_has_a_severity_and_a_runbook_that_exists() -> None:
    docs = (DEPLOY.parent / "docs" / "observability.md").read_text().lower()
    rules = yaml.safe_load((PROMETHEUS / "rules" / "alerts.yml").read_text())
    for rule in (r for g in rules["groups"] for r in g["rules"] if "alert" in r):
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"], rule["alert"]
        assert annotations["description"], rule["alert"]
        page, _, anchor = annotations["runbook"].partition("#")
        assert page == "docs/observability.md"
        assert anchor == rule["alert"].lower()
        assert f"### {rule['alert'].lower()}" in docs, rule["alert"]


def test_the_shipped_alertmanager_configuration_is_valid() -> None:
    _run(_tool("amtool"), "check-config", str(ALERTMANAGER))


def test_the_generated_configurations_are_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    promtool, amtool = _tool("promtool"), _tool("amtool")
    monkeypatch.delenv("DASHBOARD_ALERTS_TOKEN", raising=False)
    monkeypatch.delenv("DASHBOARD_ALERTS_TOKEN_FILE", raising=False)
    settings = MonitoringSettings(MONITORING_ALERT_FOR="2s", MONITORING_SCRAPE_INTERVAL="1s")
    web = Process("dashboard", "web", ["true"], 8080, front=True)
    processes = with_monitoring([web], "127.0.0.1", tmp_path, settings)
    if len(processes) == 1:
        missing_tools("prometheus or alertmanager")
    directory = tmp_path / "monitoring"
    TargetsFile.in_dir(tmp_path).update(
        [{"name": "dashboard", "role": "web", "url": "http://127.0.0.1:8080", "pid": 1}],
        "127.0.0.1",
    )
    _run(promtool, "check", "config", str(directory / "prometheus.yml"))
    _run(amtool, "check-config", str(directory / "alertmanager.yml"))
    config = prometheus_config(directory, directory / "targets.json", settings)
    for path in config["rule_files"]:  # the copies, with the shorter for:
        assert Path(path).parent == directory / "rules"
        assert "for: 1m" not in Path(path).read_text()
    assert (directory / "alerts.token").stat().st_mode & 0o777 == 0o600
    dashboard = processes[0]
    assert dashboard.env["DASHBOARD_ALERTS_TOKEN_FILE"] == str(directory / "alerts.token")
    targets = json.loads((directory / "targets.json").read_text())
    assert targets == [
        {"targets": ["127.0.0.1:8080"], "labels": {"job": "web", "instance": "dashboard"}}
    ]


def test_a_firing_alert_is_sent_again_before_the_dashboard_forgets_it() -> None:
    # Half of the TTL: one failed delivery still leaves time for the next.
    limit = ALERT_TTL.total_seconds() / 2
    shipped = yaml.safe_load(ALERTMANAGER.read_text())["route"]
    assert _repeated_within(shipped) <= limit, shipped
    slowest = MonitoringSettings(MONITORING_GROUP_INTERVAL="5m")
    generated = _alertmanager_config("http://web/hook", Path("token"), slowest)["route"]
    assert generated["group_interval"] == "5m"
    assert _repeated_within(generated) <= limit, generated
    with pytest.raises(ValidationError, match="MONITORING_GROUP_INTERVAL"):
        MonitoringSettings(MONITORING_GROUP_INTERVAL="6m")

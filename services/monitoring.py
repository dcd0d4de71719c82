"""``aioshop up --monitoring``: Prometheus and Alertmanager beside the system, and the targets
file that tells Prometheus where every instance is.

``TargetsFile`` keeps ``<data-dir>/monitoring/targets.json`` (Prometheus's ``file_sd`` format,
labels ``job`` = the role and ``instance`` = the process's name) up to date as the supervisor
starts processes: ``aioshop up`` writes it with or without ``--monitoring``, for a Prometheus run
elsewhere too. A given-up instance stays a target: its ``InstanceDown`` keeps firing until
``aioshop restart`` brings it back.

``with_monitoring`` adds the two servers to the plan when their binaries are on ``PATH``
(``prometheus``; ``prometheus-alertmanager``, Debian's name, or ``alertmanager``): their
configurations are generated into ``<data-dir>/monitoring/`` from the rules shipped in
``deploy/prometheus/rules`` (found beside the package, in a checkout), with a bearer token made
for the dashboard's alert webhook (``DASHBOARD_ALERTS_TOKEN_FILE`` for the dashboard,
``credentials_file`` for Alertmanager). ``MonitoringSettings`` sets ports and intervals.

Alertmanager shows a firing alert's ``endsAt`` only once it resolved, so the dashboard forgets
a firing alert it has not been told about again for a while (``web.alerts.ALERT_TTL``, 20
minutes): the routing re-sends every firing alert every ``REPEAT_INTERVAL`` (5 minutes, plus
up to one group interval), as ``deploy/alertmanager/alertmanager.yml`` does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.process import Process, client_host

__all__ = [
    "DEPLOY",
    "MONITORING_DIR",
    "REPEAT_INTERVAL",
    "MonitoringError",
    "MonitoringSettings",
    "TargetsFile",
    "binaries",
    "prometheus_config",
    "rule_files",
    "with_monitoring",
]

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MONITORING_DIR = "monitoring"
TOKEN_VAR = "DASHBOARD_ALERTS_TOKEN"  # noqa: S105  # nosec B105: a variable name
ALERTMANAGERS = ("prometheus-alertmanager", "alertmanager")
_DURATION = r"^[0-9]+(ms|s|m|h)$"
_FOR = re.compile(r"^(\s+for:\s*)\S+", re.MULTILINE)
REPEAT_INTERVAL = "5m"  # a firing alert is re-sent this often: under the dashboard's ALERT_TTL
MAX_GROUP_INTERVAL = "5m"  # with REPEAT_INTERVAL, at most half of the dashboard's ALERT_TTL


class MonitoringError(Exception):
    """Monitoring cannot be set up (the rules are not where a checkout has them)."""


class MonitoringSettings(BaseSettings):
    """Ports and intervals of the monitoring ``aioshop up --monitoring`` runs.

    ``PROMETHEUS_PORT`` (9090), ``ALERTMANAGER_PORT`` (9093), both on 127.0.0.1;
    ``MONITORING_SCRAPE_INTERVAL`` and ``MONITORING_EVALUATION_INTERVAL`` (15s);
    ``MONITORING_ALERT_FOR``: when set, every alert's ``for:`` in the generated copy of the
    rules (tests use ``1s``); ``MONITORING_GROUP_WAIT`` (10s) and ``MONITORING_GROUP_INTERVAL``
    (1m, at most 5m: a firing alert is re-sent every ``REPEAT_INTERVAL`` plus up to one group
    interval, well before the dashboard forgets it): how long Alertmanager gathers alerts
    before it notifies the dashboard.
    """

    model_config = SettingsConfigDict(extra="ignore")

    prometheus_port: int = Field(
        default=9090, ge=1, le=65535, validation_alias=AliasChoices("PROMETHEUS_PORT")
    )
    alertmanager_port: int = Field(
        default=9093, ge=1, le=65535, validation_alias=AliasChoices("ALERTMANAGER_PORT")
    )
    monitoring_scrape_interval: str = Field(default="15s", pattern=_DURATION)
    monitoring_evaluation_interval: str = Field(default="15s", pattern=_DURATION)
    monitoring_alert_for: str | None = Field(default=None, pattern=_DURATION)
    monitoring_group_wait: str = Field(default="10s", pattern=_DURATION)
    monitoring_group_interval: str = Field(default="1m", pattern=_DURATION)

    @model_validator(mode="after")
    def _repeated_in_time(self) -> MonitoringSettings:
        if _seconds(self.monitoring_group_interval) > _seconds(MAX_GROUP_INTERVAL):
            raise ValueError(
                f"MONITORING_GROUP_INTERVAL is at most {MAX_GROUP_INTERVAL}: the dashboard "
                "forgets a firing alert that is not notified again within 20 minutes"
            )
        return self


class TargetsFile:
    """``targets.json`` for Prometheus's ``file_sd_configs``, rewritten (atomically, only when it
    changes) from the supervisor's process states: every process started at least once."""

    def __init__(self, path: Path, say: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._say = say or (lambda line: print(f"aioshop up: {line}", file=sys.stderr))
        self._started: set[str] = set()
        self._written: str | None = None
        self._failed = False

    @classmethod
    def in_dir(cls, data_dir: Path) -> TargetsFile:
        """The targets file of ``aioshop up`` in ``data_dir``."""
        return cls(data_dir / MONITORING_DIR / "targets.json")

    def update(self, processes: Sequence[dict[str, Any]], host: str) -> None:
        """Rewrite the file for ``processes`` (``name``, ``role``, ``url``, ``pid``); best
        effort: failing to write it must not stop the system it describes."""
        for process in processes:
            if process.get("pid") is not None:
                self._started.add(process["name"])
        groups = [
            {
                "targets": [str(p["url"]).split("://", 1)[-1]],
                "labels": {"job": p["role"], "instance": p["name"]},
            }
            for p in processes
            if p["name"] in self._started
        ]
        text = json.dumps(groups, indent=2) + "\n"
        if text == self._written:
            return
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(text)
            temporary.replace(self.path)
        except OSError as exc:
            if not self._failed:
                self._say(f"cannot write {self.path} ({exc}); Prometheus will not see changes")
            self._failed = True
            return
        self._failed = False
        self._written = text


def binaries() -> tuple[str | None, str | None]:
    """The paths of ``prometheus`` and of Alertmanager on ``PATH`` (``None`` when missing)."""
    alertmanager = next((p for p in map(shutil.which, ALERTMANAGERS) if p), None)
    return shutil.which("prometheus"), alertmanager


def rule_files(deploy: Path = DEPLOY) -> list[Path]:
    """The shipped rule files (``deploy/prometheus/rules/*.yml``); ``MonitoringError`` when
    they are not there (an installation without the repository's ``deploy/``)."""
    rules = sorted((deploy / "prometheus" / "rules").glob("*.yml"))
    if not rules:
        raise MonitoringError(
            f"no Prometheus rules in {deploy / 'prometheus' / 'rules'}: --monitoring runs from a "
            "checkout of the repository (deploy/ beside the services package)"
        )
    return rules


def _rules(directory: Path, settings: MonitoringSettings) -> list[str]:
    """The rule files Prometheus loads: the shipped ones, or copies with ``for:`` replaced."""
    shipped = rule_files()
    if settings.monitoring_alert_for is None:
        return [str(path) for path in shipped]
    copies = directory / "rules"
    copies.mkdir(exist_ok=True)
    for path in shipped:
        text = _FOR.sub(lambda m: m.group(1) + str(settings.monitoring_alert_for), path.read_text())
        (copies / path.name).write_text(text)
    return [str(copies / path.name) for path in shipped]


def prometheus_config(
    directory: Path, targets: Path, settings: MonitoringSettings, host: str = "127.0.0.1"
) -> dict[str, Any]:
    """The configuration of the Prometheus ``aioshop up`` runs: targets from ``targets``."""
    interval = settings.monitoring_scrape_interval
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval if _seconds(interval) < 10 else "10s",
            "evaluation_interval": settings.monitoring_evaluation_interval,
            "external_labels": {"system": "aioshop"},
        },
        "rule_files": _rules(directory, settings),
        "alerting": {
            "alertmanagers": [
                {
                    "static_configs": [
                        {"targets": [f"{client_host(host)}:{settings.alertmanager_port}"]}
                    ]
                }
            ]
        },
        "scrape_configs": [
            {
                "job_name": "aioshop",  # each target's own job label (its role) wins
                "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "30s"}],
            }
        ],
    }


def _alertmanager_config(
    webhook: str, token_file: Path, settings: MonitoringSettings
) -> dict[str, Any]:
    """deploy/alertmanager/alertmanager.yml's routing, to this dashboard with this token."""
    return {
        "route": {
            "receiver": "dashboard",
            "group_by": ["alertname", "job", "instance"],
            "group_wait": settings.monitoring_group_wait,
            "group_interval": settings.monitoring_group_interval,
            "repeat_interval": REPEAT_INTERVAL,
        },
        "receivers": [
            {
                "name": "dashboard",
                "webhook_configs": [
                    {
                        "url": webhook,
                        "send_resolved": True,
                        "max_alerts": 100,
                        "http_config": {
                            "authorization": {
                                "type": "Bearer",
                                "credentials_file": str(token_file),
                            }
                        },
                    }
                ],
            }
        ],
        "inhibit_rules": [
            {
                "source_matchers": ['alertname="InstanceDown"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["instance"],
            }
        ],
    }


def _seconds(duration: str) -> float:
    number, unit = re.fullmatch(r"([0-9]+)(ms|s|m|h)", duration).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def _token(token_file: Path) -> None:
    """Write the webhook's token: the one configured for the dashboard, else a new one."""
    token = os.environ.get(TOKEN_VAR)
    given = os.environ.get(f"{TOKEN_VAR}_FILE")
    if token is None and given is not None:
        token = Path(given).read_text().rstrip("\n")
    token_file.touch(mode=0o600)
    token_file.chmod(0o600)
    token_file.write_text(token or secrets.token_urlsafe(32))


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")  # JSON is YAML: no YAML library needed


def with_monitoring(
    processes: list[Process],
    host: str,
    data_dir: Path,
    settings: MonitoringSettings | None = None,
) -> list[Process]:
    """``processes`` and Prometheus and Alertmanager, configured in ``<data_dir>/monitoring``
    and listening where the services are reached (127.0.0.1 unless ``host`` names an address);
    ``processes`` unchanged, after saying what to install, when a binary is missing."""
    settings = settings or MonitoringSettings()
    prometheus, alertmanager = binaries()
    if prometheus is None or alertmanager is None:
        missing = [
            n for n, p in (("prometheus", prometheus), ("alertmanager", alertmanager)) if not p
        ]
        print(
            f"--monitoring: {' and '.join(missing)} not found on PATH; running without "
            "monitoring (Debian: apt-get install prometheus prometheus-alertmanager)",
            file=sys.stderr,
        )
        return processes
    directory = (data_dir / MONITORING_DIR).absolute()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    targets = TargetsFile.in_dir(data_dir.absolute()).path
    token_file = directory / "alerts.token"
    _token(token_file)
    dashboard = next((p for p in processes if p.role == "web"), None)
    result = []
    for process in processes:
        if process is dashboard and TOKEN_VAR not in os.environ:
            env = {**process.env, f"{TOKEN_VAR}_FILE": str(token_file)}
            process = dataclasses.replace(process, env=env)
        result.append(process)
    _write_yaml(directory / "prometheus.yml", prometheus_config(directory, targets, settings, host))
    listen = client_host(host)
    prom_url = f"http://{listen}:{settings.prometheus_port}"
    am_url = f"http://{listen}:{settings.alertmanager_port}"
    prom_cmd = [
        prometheus,
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'prometheus'}",
        f"--web.listen-address={listen}:{settings.prometheus_port}",
        f"--web.external-url={prom_url}/",
        "--log.level=warn",
    ]
    result.append(_server("prometheus", prom_cmd, settings.prometheus_port))
    if dashboard is None:
        return result  # nothing to notify: Prometheus alone shows the alerts
    webhook = f"{dashboard.url(host)}/dashboard/api/alerts"
    _write_yaml(directory / "alertmanager.yml", _alertmanager_config(webhook, token_file, settings))
    am_cmd = [
        alertmanager,
        f"--config.file={directory / 'alertmanager.yml'}",
        f"--storage.path={directory / 'alertmanager'}",
        f"--web.listen-address={listen}:{settings.alertmanager_port}",
        f"--web.external-url={am_url}/",
        "--cluster.listen-address=",  # one Alertmanager: no gossip port (:9094)
        "--log.level=warn",
    ]
    result.append(_server("alertmanager", am_cmd, settings.alertmanager_port))
    return result


def _server(name: str, cmd: list[str], port: int) -> Process:
    # Front: started once every service is ready, so that its first scrapes find them up.
    return Process(name, name, cmd, port, front=True, ready_path="/-/ready")

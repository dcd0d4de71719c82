"""docker-compose.yml and the Dockerfile, checked without a Docker engine (none runs here).

The compose file is validated against the Compose Specification's JSON Schema (the one
check-jsonschema ships: ``--builtin-schema vendor.compose-spec``), then against what the code
says: the commands parse with the real CLI, the ports are the services' own, every upstream of
the gateway is a service of the file (replicas found by DNS), every awaited health has a check.
"""

from __future__ import annotations

import configparser
import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.auth import keygen
from services import registry
from services.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return doc


def _schema_errors(path: Path) -> str:
    """check-jsonschema's complaints about ``path`` against the Compose Specification; empty
    when it is valid."""
    result = subprocess.run(  # noqa: S603 - the venv's own tool, fixed arguments
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return "" if result.returncode == 0 else result.stdout + result.stderr


def test_the_compose_file_follows_the_compose_specification() -> None:
    assert _schema_errors(ROOT / "docker-compose.yml") == ""


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("services", "redis", "healthcheck", "retries"), {"many": True}),
        (("services", "gateway", "depends_on", "users", "condition"), "when_it_feels_like_it"),
        (("services", "gateway", "no_such_key"), True),
    ],
)
def test_the_schema_check_catches_a_broken_file(
    compose: dict[str, Any], path: tuple[str, ...], value: object, tmp_path: Path
) -> None:
    broken = copy.deepcopy(compose)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    file = tmp_path / "docker-compose.yml"
    file.write_text(yaml.safe_dump(broken), encoding="utf-8")
    assert _schema_errors(file) != ""


def test_every_server_and_process_is_there(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "rabbitmq", "memcached", "mongodb"} <= set(services)
    assert "management" not in services["rabbitmq"]["image"]  # no management port at all
    ours = {name for name, spec in services.items() if spec.get("image") == "aioshop:latest"}
    commands = [" ".join(services[name]["command"]) for name in ours]
    for role in registry.ROLES:  # every process is an `aioshop serve ROLE`
        assert any(c.startswith(f"aioshop serve {role} ") for c in commands), role
    assert services["products"]["deploy"]["replicas"] == 2  # two product instances
    monitoring = {"prometheus", "alertmanager", "grafana"}
    for name in monitoring | {"jaeger"}:  # the optional parts sit in profiles
        assert services[name]["profiles"], name


def test_the_image_runs_the_gateway_by_default_as_every_process_runs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    cmd = re.findall(r"^CMD (.+)$", dockerfile, re.MULTILINE)
    assert len(cmd) == 1
    command = json.loads(cmd[0])
    assert command[:3] == ["aioshop", "serve", "gateway"]
    build_parser().parse_args(command[1:])


def test_commands_parse_with_the_real_command_line(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name, spec in compose["services"].items():
        command = spec.get("command")
        if spec.get("image") != "aioshop:latest":
            continue
        if command[0] == "aioshop":
            parser.parse_args(command[1:])
        elif command[2] == "core.auth.keygen":
            keygen.build_parser().parse_args(command[3:])
        else:
            assert command[:2] == ["python", "-m"], name
            assert importlib.util.find_spec(f"{command[2]}.__main__") is not None, name


def test_services_listen_on_their_own_ports_and_the_gateway_reaches_every_one(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    ports = {name: entry.settings().port for name, entry in registry.SERVICES.items()}
    gateway_env = services["gateway"]["environment"]
    for service, port in ports.items():
        urls = gateway_env[f"UPSTREAM_{service.upper()}"].split(",")
        for url in urls:
            match = re.fullmatch(r"(dns\+)?http://([a-z0-9-]+):(\d+)", url)
            assert match is not None, url
            discovered, host, url_port = match.groups()
            assert host in services, url
            assert int(url_port) == port, url
            assert f"serve {service}" in " ".join(services[host]["command"]), url
            assert services[host]["environment"]["HEALTH_PORT"] == str(port)
            # A service with replicas is found by DNS: a plain URL would be one of them.
            replicated = services[host].get("deploy", {}).get("replicas", 1) > 1
            assert not replicated or discovered, url
    assert gateway_env["UPSTREAM_PRODUCTS"] == "dns+http://products:8002"
    assert services["orders"]["environment"]["PRODUCTS_URL"] == "dns+http://products:8002"
    assert services["gateway"]["ports"] == ["127.0.0.1:8000:8000"]
    command = services["gateway"]["command"]  # TLS at the gateway, from secrets
    assert command[command.index("--certfile") + 1] == "/run/secrets/gateway_tls_cert"
    assert command[command.index("--keyfile") + 1] == "/run/secrets/gateway_tls_key"
    assert {"gateway_tls_cert", "gateway_tls_key"} <= set(services["gateway"]["secrets"])


def test_awaited_health_is_checked_somewhere(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for name, spec in compose["services"].items():
        for dependency, condition in spec.get("depends_on", {}).items():
            assert dependency in compose["services"], (name, dependency)
            if condition["condition"] != "service_healthy":
                continue
            target = compose["services"][dependency]
            has_check = "healthcheck" in target or (
                target.get("image") == "aioshop:latest" and "HEALTHCHECK" in dockerfile
            )
            assert has_check, (name, dependency)


def test_the_dockerfile_builds_in_stages_and_runs_as_a_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", dockerfile, re.MULTILINE)
    assert len(stages) >= 2
    runtime = dockerfile.split(f"AS {stages[-1][1]}", 1)[1]
    assert "COPY --from=build /opt/venv /opt/venv" in runtime  # copied whole, never pruned
    assert "gcc" not in runtime  # compilers stay in the build stage
    assert not re.search(r"\brm\b", runtime)  # no layer deletes what an earlier one holds
    user = re.search(r"^USER (\S+)$", runtime, re.MULTILINE)
    assert user is not None
    assert user.group(1) not in ("root", "0")


def test_the_dockerfile_copies_every_installed_package() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    include = config["options.packages.find"]["include"].split()
    packages = {name for name in include if "." not in name and "*" not in name}
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for package in packages:
        assert (ROOT / package).is_dir(), package
        assert f"COPY {package} ./{package}" in dockerfile, package


def test_every_server_that_keeps_state_keeps_it_on_a_volume(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, path in (
        ("postgres", "/var/lib/postgresql/data"),
        ("redis", "/data"),
        ("rabbitmq", "/var/lib/rabbitmq"),
    ):
        mounts = {volume.split(":", 1)[1] for volume in services[name].get("volumes", [])}
        assert path in mounts, name
        assert services[name]["volumes"][0].split(":", 1)[0] in compose["volumes"], name
    assert services["rabbitmq"]["hostname"] == "rabbitmq"


OFFICIAL_IMAGES = {
    "postgres": ("POSTGRES_IMAGE", "postgres:16"),
    "redis": ("REDIS_IMAGE", "redis:7"),
    "rabbitmq": ("RABBITMQ_IMAGE", "rabbitmq:3"),
    "memcached": ("MEMCACHED_IMAGE", "memcached:1.6"),
    "mongodb": ("MONGODB_IMAGE", "mongo:7"),
}


def test_each_server_image_is_official_unless_overridden(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, (variable, official) in OFFICIAL_IMAGES.items():
        assert services[name]["image"] == f"${{{variable}:-{official}}}", name
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert "aioshop-local/" not in text  # the stand-ins are named only by the kit's env file
    build = services["users"]["build"]
    assert build["args"]["PYTHON_IMAGE"] == "${PYTHON_IMAGE:-python:3.11-slim}"
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile
    assert re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE) == ["${PYTHON_IMAGE}"] * 2
    assert not dockerfile.startswith("# syntax=")  # the classic builder needs no registry


def test_with_no_variable_set_the_file_names_only_official_images(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """Interpolated as Compose does with an empty environment, the file still validates."""

    def default(match: re.Match[str]) -> str:
        return match.group(2)

    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    resolved = re.sub(r"\$\{(\w+):-([^}]*)\}", default, text)
    assert "${" not in resolved.replace("$${", "")
    file = tmp_path / "docker-compose.yml"
    file.write_text(resolved, encoding="utf-8")
    assert _schema_errors(file) == ""
    doc = yaml.safe_load(resolved)
    images = {spec["image"] for spec in doc["services"].values()}
    local = {image for image in images if image.startswith("aioshop-local/")}
    assert local == set()


def test_every_container_has_limits_and_ours_a_read_only_root(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        limits = spec.get("deploy", {}).get("resources", {}).get("limits", {})
        assert limits.get("memory"), name
        assert limits.get("cpus"), name
        if spec.get("image") == "aioshop:latest":
            assert spec["read_only"] is True, name
            assert "/tmp" in spec["tmpfs"], name  # noqa: S108 - a tmpfs of the container


def test_mongodb_is_optional_and_the_archive_is_on_postgresql_without_it(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["mongodb"]["profiles"] == ["mongodb"]
    for name, spec in services.items():
        if "mongodb" in spec.get("profiles", []):
            continue
        assert "mongodb" not in spec.get("depends_on", {}), name
        assert "MONGODB_URL_FILE" not in spec.get("environment", {}), name
    web = services["web"]
    assert web["environment"]["ARCHIVE_DATABASE_URL_FILE"] == "/run/secrets/archive_database_url"
    override = yaml.safe_load((ROOT / "deploy" / "compose.mongodb.yml").read_text())
    assert _schema_errors(ROOT / "deploy" / "compose.mongodb.yml") == ""
    assert override["services"]["web"]["environment"] == {
        "MONGODB_URL_FILE": "/run/secrets/mongodb_url"
    }
    assert override["services"]["web"]["secrets"] == ["mongodb_url"]


def test_one_healthcheck_fits_every_role(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert len(re.findall(r"^HEALTHCHECK ", dockerfile, re.MULTILINE)) == 1
    for name, spec in compose["services"].items():
        if spec.get("image") == "aioshop:latest":
            assert "healthcheck" not in spec, name
    gateway = compose["services"]["gateway"]["environment"]
    assert gateway["HEALTH_CAFILE"] == "/run/secrets/gateway_tls_cert"

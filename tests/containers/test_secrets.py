"""No shared or default credential in the containers: docker-compose.yml, the Dockerfile,
``deploy/gen-secrets.sh`` and the keygen service (``core.auth.keygen``), checked without a
Docker engine.

The last test plays the compose file: it runs the secrets script and the keygen command on
temporary directories standing for the Compose secrets and named volumes, then builds each
app's settings from the environment its service declares, reaching only the files that service
mounts, as the image runs it (``AIOSHOP_ENV`` of the Dockerfile, ``--host 0.0.0.0``).
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from core.auth import keygen
from core.settings import BaseServiceSettings
from gateway.settings import Settings as GatewaySettings
from services import registry
from web.settings import Settings as WebSettings

ROOT = Path(__file__).resolve().parents[2]
SECRETS_SCRIPT = ROOT / "deploy" / "gen-secrets.sh"
IMAGE = "aioshop:latest"
# The variables that carry a credential: none may be given inline, only as <NAME>_FILE.
SECRET_VARIABLES = re.compile(
    r"^(JWT_PRIVATE_KEY|JWT_PUBLIC_KEY|IDENTITY_SECRET|REDIS_URL|AMQP_URL|MONGODB_URL"
    r"|([A-Z]+_)?DATABASE_URL|ADMIN_PASSWORD|\w*PASSWORD|\w*_PASS)$"
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return doc


def _apps(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run our image (every app, migrate, keygen)."""
    return {name: spec for name, spec in compose["services"].items() if spec.get("image") == IMAGE}


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _image_env() -> dict[str, str]:
    """The ``ENV`` of the Dockerfile's last (runtime) stage."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    runtime = re.split(r"^FROM .*$", dockerfile, flags=re.MULTILINE)[-1]
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", runtime, re.MULTILINE):
        env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def _mounts(spec: dict[str, Any]) -> dict[str, str]:
    """A service's named-volume mounts: container path -> volume."""
    mounts = {}
    for entry in spec.get("volumes", []):
        volume, target = entry.split(":")[:2]
        mounts[target] = volume
    return mounts


def entry_is_read_only(spec: dict[str, Any], source: str) -> bool:
    """Whether the bind mount of ``source`` in ``spec`` is read-only (``:ro``)."""
    return any(entry.split(":")[0] == source and entry.endswith(":ro") for entry in spec["volumes"])


def _secret_names(spec: dict[str, Any]) -> set[str]:
    return {s if isinstance(s, str) else s["source"] for s in spec.get("secrets", [])}


def test_nothing_uses_the_guest_account(compose: dict[str, Any]) -> None:
    assert [s for s in _strings(compose) if "guest" in s.lower()] == []


def test_the_image_runs_in_production_and_no_service_says_otherwise(
    compose: dict[str, Any],
) -> None:
    assert _image_env()["AIOSHOP_ENV"] == "production"
    for name, spec in compose["services"].items():
        environment = spec.get("environment", {})
        assert environment.get("AIOSHOP_ENV", "production") == "production", name


def test_nothing_is_published_beyond_this_machine(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        for port in spec.get("ports", []):
            if isinstance(port, dict):
                host_ip = port.get("host_ip", "")
            else:
                parts = str(port).split(":")
                host_ip = parts[0] if len(parts) == 3 else ""
            assert host_ip == "127.0.0.1", (name, port)
    assert compose["services"]["gateway"]["ports"] == ["127.0.0.1:8000:8000"]
    management = compose["services"]["rabbitmq"].get("ports", [])
    assert all(str(p).startswith("127.0.0.1:") for p in management)


def test_no_credential_is_written_in_the_file(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        environment = spec.get("environment", {})
        inline = [key for key in environment if SECRET_VARIABLES.match(key)]
        assert inline == [], (name, inline)
        for value in _strings(spec):
            assert not re.search(r"://[^/\s@]*:[^/\s@]*@", value), (name, value)  # user:pass@
    postgres = compose["services"]["postgres"]["environment"]
    assert "POSTGRES_HOST_AUTH_METHOD" not in postgres
    assert postgres["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")


def test_every_file_a_service_names_is_mounted_in_it(compose: dict[str, Any]) -> None:
    defined = set(compose["secrets"])
    volumes = set(compose["volumes"])
    for name, spec in compose["services"].items():
        secrets = _secret_names(spec)
        assert secrets <= defined, name
        mounts = _mounts(spec)
        for source in mounts.values():
            if source.startswith("./"):  # a bind mount: configuration of the repository, or
                # a file deploy/gen-secrets.sh makes (those are never committed)
                generated = source.startswith("./deploy/secrets/") and any(
                    entry["file"] == source for entry in compose["secrets"].values()
                )
                assert generated or (ROOT / source).exists(), (name, source)
                assert entry_is_read_only(spec, source), (name, source)
            else:
                assert source in volumes, (name, source)
        for key, value in spec.get("environment", {}).items():
            if not key.endswith("_FILE"):
                continue
            path = PurePosixPath(value)
            if path.parent == PurePosixPath("/run/secrets"):
                assert path.name in secrets, (name, key)
            else:
                assert str(path.parent) in mounts, (name, key)


def test_every_app_gets_the_keys_from_files_and_only_users_the_private_key(
    compose: dict[str, Any],
) -> None:
    apps = _apps(compose)
    generator = apps.pop("keygen")
    private_out, public_out = generator["command"][3:]
    generator_mounts = _mounts(generator)
    private_volume = generator_mounts[str(PurePosixPath(private_out).parent)]
    public_volume = generator_mounts[str(PurePosixPath(public_out).parent)]
    assert private_volume != public_volume
    for name, spec in apps.items():
        environment = spec["environment"]
        assert environment["JWT_PUBLIC_KEY_FILE"] == public_out, name
        assert spec["depends_on"]["keygen"]["condition"] == "service_completed_successfully"
        mounts = _mounts(spec)
        assert mounts[str(PurePosixPath(public_out).parent)] == public_volume, name
        signs = name == "users"
        assert ("JWT_PRIVATE_KEY_FILE" in environment) is signs, name
        assert (private_volume in mounts.values()) is signs, name
        if signs:
            assert environment["JWT_PRIVATE_KEY_FILE"] == private_out
        assert all(entry.endswith(":ro") for entry in spec["volumes"]), name


def _run_secrets_script(directory: Path) -> None:
    sh = shutil.which("sh")
    assert sh is not None
    subprocess.run(  # noqa: S603 (our own script, fixed arguments)
        [sh, str(SECRETS_SCRIPT), str(directory)], check=True, capture_output=True
    )


def test_the_secrets_script_makes_every_secret_once(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    directory = tmp_path / "secrets"
    _run_secrets_script(directory)
    for name, entry in compose["secrets"].items():
        assert PurePosixPath(entry["file"]).parent == PurePosixPath("deploy/secrets"), name
        file = directory / PurePosixPath(entry["file"]).name
        assert file.is_file(), name
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, name
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    text = {path.name: path.read_text(encoding="utf-8").strip() for path in directory.iterdir()}
    passwords = [text[f"{server}_password"] for server in ("postgres", "rabbitmq", "redis")]
    assert len(set(passwords)) == 3
    assert all(re.fullmatch(r"[0-9a-f]{64}", p) for p in passwords)
    assert text["rabbitmq_conf"].splitlines() == [
        "default_user = aioshop",
        f"default_pass = {text['rabbitmq_password']}",
    ]
    assert text["amqp_url"] == (
        f"amqp://aioshop:{text['rabbitmq_password']}@rabbitmq:5672/?heartbeat=10"
    )
    assert text["redis_conf"] == f"requirepass {text['redis_password']}"
    assert f":{text['redis_password']}@redis:6379/" in text["redis_url"]
    assert f":{text['postgres_password']}@postgres:5432/aioshop_users" in text["users_database_url"]

    _run_secrets_script(directory)  # again: nothing changes
    again = {path.name: path.read_text(encoding="utf-8").strip() for path in directory.iterdir()}
    assert again == text


def test_the_servers_use_their_secrets(compose: dict[str, Any]) -> None:
    services = compose["services"]
    redis = services["redis"]
    assert redis["command"][:2] == ["redis-server", "/run/secrets/redis_conf"]
    assert "redis_conf" in _secret_names(redis)
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])
    [rabbit_conf] = services["rabbitmq"]["secrets"]
    assert rabbit_conf["source"] == "rabbitmq_conf"
    assert rabbit_conf["target"].startswith("/etc/rabbitmq/conf.d/")
    assert services["mongodb"]["environment"]["MONGO_INITDB_ROOT_PASSWORD_FILE"].startswith(
        "/run/secrets/"
    )


def test_the_keygen_command_makes_a_pair_once(tmp_path: Path) -> None:
    private, public = tmp_path / "private" / "key.pem", tmp_path / "public" / "key.pem"
    private.parent.mkdir()
    public.parent.mkdir()
    assert keygen.main([str(private), str(public)]) == 0
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) & 0o044 == 0o044
    first = private.read_text(), public.read_text()
    assert keygen.public_pem(first[0]) == first[1]
    assert keygen.main([str(private), str(public)]) == 0
    assert (private.read_text(), public.read_text()) == first  # kept

    public.unlink()
    assert keygen.ensure_key_files(private, public) is False
    assert public.read_text() == first[1]  # derived again from the private key

    private.unlink()
    with pytest.raises(FileExistsError):
        keygen.ensure_key_files(private, public)
    assert keygen.main([str(private), str(public)]) == 1
    assert not private.exists()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["key.pem"]


def _settings_classes(command: list[str]) -> list[type[BaseServiceSettings]]:
    def of(service: str) -> type[BaseServiceSettings]:
        cls: type[BaseServiceSettings] = importlib.import_module(
            registry.get(service).module
        ).Settings
        return cls

    fronts: dict[str, list[type[BaseServiceSettings]]] = {
        "gateway": [GatewaySettings],
        "web": [WebSettings],
    }
    if command[:2] == ["aioshop", "serve"]:
        return fronts[command[2]] if command[2] in fronts else [of(command[2])]
    assert command[:2] == ["aioshop", "migrate"], command
    return [of(service) for service in registry.SERVICES]


def test_every_app_starts_from_its_compose_environment_as_the_image_runs_it(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "secrets"
    _run_secrets_script(secrets)
    volumes = {name: tmp_path / "volumes" / name for name in compose["volumes"]}
    for directory in volumes.values():
        directory.mkdir(parents=True)
    apps = _apps(compose)

    def host_path(spec: dict[str, Any], container_path: str) -> str:
        path = PurePosixPath(container_path)
        if path.parent == PurePosixPath("/run/secrets") and path.name in _secret_names(spec):
            return str(secrets / path.name)
        for target, volume in _mounts(spec).items():
            if path.is_relative_to(target):
                return str(volumes[volume] / path.relative_to(target))
        return str(tmp_path / "not-mounted" / path.name)

    generator = apps.pop("keygen")
    command = [host_path(generator, arg) for arg in generator["command"][3:]]
    assert keygen.main(command) == 0
    image_env = _image_env()
    public_key = Path(command[1]).read_text(encoding="utf-8").rstrip("\n")

    for name, spec in apps.items():
        args = spec["command"]
        host = args[args.index("--host") + 1] if "--host" in args else "127.0.0.1"
        assert host == "0.0.0.0" or name == "migrate", name  # noqa: S104
        with monkeypatch.context() as patch:
            for variable in list(os.environ):  # only what the container would have
                if variable.startswith(("AIOSHOP", "JWT_")) or variable.endswith(
                    ("_URL", "_FILE", "_SECRET", "_KEY")
                ):
                    patch.delenv(variable)
            environment = {**image_env, **spec["environment"]}
            for key, value in environment.items():
                patch.setenv(key, host_path(spec, value) if key.endswith("_FILE") else value)
            for cls in _settings_classes(spec["command"]):
                settings = cls(_env_file=None, host=host)  # type: ignore[call-arg]
                assert settings.env == "production"
                assert settings.jwt_public_key == public_key
                assert (settings.jwt_private_key is not None) is (name == "users"), name
                assert settings.redis_url == (secrets / "redis_url").read_text().strip()
                assert settings.amqp_url == (secrets / "amqp_url").read_text().strip()
                if hasattr(settings, "database_url"):
                    assert "@postgres:5432/" in settings.database_url
                    assert (secrets / "postgres_password").read_text().strip() in (
                        settings.database_url
                    )
                if isinstance(settings, GatewaySettings):
                    assert settings.identity_secret is not None
                if isinstance(settings, WebSettings):  # the archive on PostgreSQL, no MongoDB
                    assert settings.mongodb_url is None
                    assert settings.archive_is_enabled
                    assert settings.archive_database_url == (
                        (secrets / "archive_database_url").read_text().strip()
                    )
                    assert settings.archive_database_url.endswith("@postgres:5432/aioshop_archive")

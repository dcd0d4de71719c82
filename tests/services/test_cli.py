"""The aioshop command line, run as a real process against the test database."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import aiormq
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

import migrations
from core.bus import Incoming, RetryPolicy
from core.bus.amqp import AmqpTransport
from core.logging import PROCESS_NAME_VAR
from core.settings import DEV_KEYS_WARNED_VAR, BaseServiceSettings
from core.testing import free_port, wait_for
from services import registry
from services.cli import main
from services.up import child_environment, parse_replicas, plan, rotation_delay

CLI = [sys.executable, "-m", "services.cli"]
RETRY_MS = (50, 1000, 5000, 30000)  # this file's retry policy, and the default one


@pytest.fixture(scope="session")
def service_dsns(throwaway_database: Callable[[str, Path], str]) -> dict[str, str]:
    """Every registered service's throw-away database (migrated once, before any test runs
    under the blocking-call guard)."""
    return {name: throwaway_database(name, migrations.location(name)) for name in registry.SERVICES}


@pytest.fixture
def cli_env(service_dsns: dict[str, str], redis_namespace: str) -> dict[str, str]:
    """The environment of a CLI process: every registered service on its throw-away database."""
    env = dict(os.environ)
    for name, dsn in service_dsns.items():
        env[f"{name.upper()}_DATABASE_URL"] = dsn
    env.update(
        REDIS_NAMESPACE=redis_namespace,
        AIOSHOP_ENV="test",
        BCRYPT_ROUNDS="4",
        LOG_LEVEL="WARNING",
        ARCHIVE_ENABLED="false",  # the default archive database is not these tests'
    )
    return env


@pytest.fixture
def email(users_dsn: str) -> Iterator[str]:
    address = f"admin-{uuid.uuid4().hex[:10]}@example.com"
    yield address
    asyncio.run(_delete(users_dsn, address))


async def _delete(dsn: str, address: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM users WHERE email = $1", address)
    finally:
        await conn.close()


def _roles(dsn: str, address: str) -> list[str] | None:
    async def fetch() -> list[str] | None:
        conn = await asyncpg.connect(dsn)
        try:
            roles = await conn.fetchval("SELECT roles FROM users WHERE email = $1", address)
            return sorted(roles) if roles is not None else None
        finally:
            await conn.close()

    return asyncio.run(fetch())


def _run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [*CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


def test_version(cli_env: dict[str, str]) -> None:
    result = _run(["--version"], cli_env)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"aioshop \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout


@pytest.mark.parametrize(
    "command", [[], ["serve"], ["migrate"], ["create-admin"], ["up"], ["bus"], ["seed"], ["keygen"]]
)
def test_help_is_in_plain_words(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: aioshop")
    assert "``" not in text, text  # no markup
    assert "%(" not in text, text  # nothing left unformatted
    if command == ["serve"]:
        assert all(role in text for role in registry.ROLES), text


def test_migrate_unknown_service_is_an_error(cli_env: dict[str, str]) -> None:
    result = _run(["migrate", "nope"], cli_env)
    assert result.returncode == 2
    assert "unknown service" in result.stderr


def _password_hash(dsn: str, address: str) -> str | None:
    async def fetch() -> str | None:
        conn = await asyncpg.connect(dsn)
        try:
            value: str | None = await conn.fetchval(
                "SELECT password_hash FROM users WHERE email = $1", address
            )
            return value
        finally:
            await conn.close()

    return asyncio.run(fetch())


def _register_customer(dsn: str, address: str) -> None:
    async def insert() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "INSERT INTO users (id, email, full_name, password_hash, roles) "
                "VALUES ($1, $2, 'Squatter', 'x', ARRAY['customer'])",
                uuid.uuid4(),
                address,
            )
        finally:
            await conn.close()

    asyncio.run(insert())


def test_create_admin_from_env_then_refuses_to_touch_it_again(
    cli_env: dict[str, str], users_dsn: str, email: str
) -> None:
    env = {**cli_env, "ADMIN_PW": "a-long-admin-password"}
    result = _run(["create-admin", email.upper(), "--password-env", "ADMIN_PW"], env)
    assert result.returncode == 0, result.stderr
    assert _roles(users_dsn, email) == ["admin", "customer"]
    first_hash = _password_hash(users_dsn, email)
    # Again without --promote-existing: refused, and the password is not replaced.
    result = _run(["create-admin", email], cli_env, stdin="another-long-password\n")
    assert result.returncode == 1
    assert "--promote-existing" in result.stderr
    assert _password_hash(users_dsn, email) == first_hash


def test_create_admin_promotes_a_registered_account_only_when_asked(
    cli_env: dict[str, str], users_dsn: str, email: str
) -> None:
    """Someone registered the admin's email first: it is not made admin on its email alone."""
    _register_customer(users_dsn, email)
    result = _run(["create-admin", email], cli_env, stdin="the-operators-password\n")
    assert result.returncode == 1
    assert "exists already" in result.stderr
    assert _roles(users_dsn, email) == ["customer"]
    assert _password_hash(users_dsn, email) == "x"

    result = _run(
        ["create-admin", email, "--promote-existing"], cli_env, stdin="the-operators-password\n"
    )
    assert result.returncode == 0, result.stderr
    assert _roles(users_dsn, email) == ["admin", "customer"]
    # The squatter's password is gone: the account now opens with the operator's.
    assert _password_hash(users_dsn, email) not in (None, "x")


def test_create_admin_rejects_a_short_password(
    cli_env: dict[str, str], users_dsn: str, email: str
) -> None:
    result = _run(["create-admin", email], cli_env, stdin="short\n")
    assert result.returncode == 2
    assert "invalid input" in result.stderr
    assert _roles(users_dsn, email) is None


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310
            return int(resp.status)
    except OSError:
        return 0


def test_up_runs_every_service_replicas_and_the_gateway_and_stops_on_ctrl_c(
    cli_env: dict[str, str],
) -> None:
    ports = {name: free_port() for name in registry.SERVICES}
    gateway, dashboard = free_port(), free_port()
    queues = {name: f"test-up-{name}-{uuid.uuid4().hex[:8]}" for name in registry.SERVICES}
    env = {
        **cli_env,
        **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
        **{f"{name.upper()}_BUS_QUEUE": queue for name, queue in queues.items()},
        "GATEWAY_PORT": str(gateway),
        "WEB_PORT": str(dashboard),
    }
    proc = subprocess.Popen(  # noqa: S603
        [*CLI, "up", "--replicas", "products=2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        output = _read_until(proc, "Ctrl-C stops everything", within=90)
        assert f"gateway    http://127.0.0.1:{gateway}" in output, output
        urls = re.findall(r"^  products-[01] +(http://\S+)", output, re.MULTILINE)
        assert len(urls) == 2, output
        assert f"http://127.0.0.1:{ports['products']}" in urls
        for name, port in ports.items():
            assert _get(f"http://127.0.0.1:{port}/readyz") == 200, name
        for url in urls:
            assert _get(f"{url}/readyz") == 200
        assert _get(f"http://127.0.0.1:{gateway}/readyz") == 200
        # The gateway spreads reads over both product instances (two random picks each).
        for _ in range(40):
            assert _get(f"http://127.0.0.1:{gateway}/api/v1/products?limit=1") == 200
        served = _served_by_instance(f"http://127.0.0.1:{gateway}/metrics", "products")
        assert set(served) == {"products-0", "products-1"}, served
        assert all(count > 0 for count in served.values()), served

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        for port in [*ports.values(), gateway]:
            assert _get(f"http://127.0.0.1:{port}/healthz") == 0  # every child is gone too
        for url in urls:
            assert _get(f"{url}/healthz") == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        asyncio.run(_delete_queues(*queues.values()))


def _read_until(proc: subprocess.Popen[str], marker: str, within: float) -> str:
    """What ``proc`` printed up to the line with ``marker`` (or up to its exit)."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            break
    return "".join(lines)


def _served_by_instance(metrics_url: str, upstream: str) -> dict[str, float]:
    with urllib.request.urlopen(metrics_url, timeout=2) as resp:  # noqa: S310
        text = resp.read().decode()
    served: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "gateway_upstream_requests_total"
                and sample.labels.get("upstream") == upstream
            ):
                instance = sample.labels["instance"]
                served[instance] = served.get(instance, 0.0) + sample.value
    return served


@pytest.mark.parametrize("command", [["serve", "users"], ["migrate", "users"]])
def test_a_database_out_of_reach_is_one_line_and_exit_status_1(
    command: list[str], cli_env: dict[str, str]
) -> None:
    refused = free_port()  # nothing listens on it
    url = f"postgresql://postgres:not-for-your-eyes@127.0.0.1:{refused}/aioshop_users"
    env = {**cli_env, "USERS_DATABASE_URL": url}
    port = ["--port", str(free_port())] if command[0] == "serve" else []
    result = _run([*command, *port], env)
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr  # no traceback
    line = result.stderr.strip()
    assert "not-for-your-eyes" not in line
    assert f"PostgreSQL at postgresql://postgres:***@127.0.0.1:{refused}/aioshop_users" in line
    assert "connection refused" in line
    assert "USERS_DATABASE_URL" in line  # what to check


@pytest.mark.parametrize("role", ["gateway", "web"])
def test_serve_runs_the_gateway_and_the_dashboard(role: str, cli_env: dict[str, str]) -> None:
    port, refused = free_port(), free_port()
    env = {
        **cli_env,
        **{f"UPSTREAM_{name.upper()}": f"http://127.0.0.1:{refused}" for name in registry.ROLES},
        "LOG_LEVEL": "INFO",
    }
    env.pop("LOG_FORMAT", None)
    proc = subprocess.Popen(  # noqa: S603
        [*CLI, "serve", role, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while _get(f"http://127.0.0.1:{port}/healthz") != 200:
            assert proc.poll() is None, f"{role} exited with {proc.returncode}"
            assert time.monotonic() < deadline, f"{role} did not answer /healthz in time"
            time.sleep(0.1)  # polling interval of a wait with a deadline
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None
        # Not a terminal: one JSON object per event, naming the process.
        events = [json.loads(line) for line in proc.stderr.read().splitlines()]
        assert any(f"serving on http://127.0.0.1:{port}" in e["message"] for e in events), events
        assert {e["process"] for e in events} == {role}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _collect(stream: IO[str], lines: list[tuple[float, str]]) -> None:
    """Append each line of ``stream`` with the moment it arrived, until its end."""
    for line in stream:
        lines.append((time.monotonic(), line))


def test_up_is_quiet_when_idle_and_warns_of_the_development_key_once(
    cli_env: dict[str, str],
) -> None:
    ports = {name: free_port() for name in registry.SERVICES}
    gateway = free_port()
    queues = {name: f"test-idle-{name}-{uuid.uuid4().hex[:8]}" for name in registry.SERVICES}
    env = {
        **cli_env,
        **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
        **{f"{name.upper()}_BUS_QUEUE": queue for name, queue in queues.items()},
        "GATEWAY_PORT": str(gateway),
        "WEB_PORT": str(free_port()),
        "LOG_LEVEL": "INFO",  # what a developer sees by default
        "AIOSHOP_ENV": "development",  # the development keys: their warning is wanted once
    }
    env.pop("LOG_FORMAT", None)
    proc = subprocess.Popen(  # noqa: S603
        [*CLI, "up", "--demo", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # the parent's and every child's lines, as on a terminal
        text=True,
    )
    assert proc.stdout is not None
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=_collect, args=(proc.stdout, lines), daemon=True)
    reader.start()

    def output() -> str:
        return "".join(line for _, line in list(lines))

    try:
        deadline = time.monotonic() + 90
        while "Ctrl-C stops everything" not in output():
            assert proc.poll() is None, output()
            assert time.monotonic() < deadline, output()
            time.sleep(0.1)  # polling interval of a wait with a deadline
        # The measurement: everything written during 10 s of idling, while something polls the
        # gateway's health as a load balancer would.
        start = time.monotonic()
        end = start + 10
        while time.monotonic() < end:
            assert _get(f"http://127.0.0.1:{gateway}/healthz") == 200
            time.sleep(0.5)  # the poller's interval
        idle = [line for moment, line in list(lines) if start <= moment < end]
        assert len(idle) <= 5, "".join(idle)
        assert output().count("public development JWT key pair") == 1, output()
        assert "is down" not in output(), output()

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        proc.stdout.close()
        asyncio.run(_delete_queues(*queues.values()))


def test_up_refuses_unknown_services_and_bad_replica_counts(cli_env: dict[str, str]) -> None:
    for spec in ("nope=2", "products=0", "products=17", "products"):
        result = _run(["up", "--no-migrate", "--replicas", spec], cli_env)
        assert result.returncode == 2, spec
        assert "replica" in result.stderr, result.stderr


def test_restart_with_no_aioshop_up_running_is_one_line_and_exit_status_1(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    result = _run(["restart", "products", "--data-dir", str(tmp_path / "none")], cli_env)
    assert result.returncode == 1
    assert "no `aioshop up` is running with data directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    refused = _run(["restart", "nope"], cli_env)
    assert refused.returncode == 2  # argparse: not a role


def test_the_plan_puts_every_instance_behind_the_gateway() -> None:
    processes = plan("0.0.0.0", parse_replicas(["products=3", "users=2"]))  # noqa: S104
    names = [p.name for p in processes]
    assert names.count("gateway") == 1
    assert {"products-0", "products-1", "products-2", "users-0", "users-1"} <= set(names)
    gateway = next(p for p in processes if p.name == "gateway")
    assert gateway.front
    instances = gateway.env["UPSTREAM_PRODUCTS"].split(",")
    assert len(set(instances)) == 3
    assert all(url.startswith("http://127.0.0.1:") for url in instances)
    assert not any(p.front for p in processes if p.role in registry.SERVICES)
    # Services calling products directly get every instance (they spread and fail over).
    for process in processes:
        if process.role in registry.SERVICES:
            assert process.env["PRODUCTS_URL"] == ",".join(instances), process
    # Replicas drain for a gateway round or more when restarted; a single instance does not.
    delays = {p.name: p.env.get("SHUTDOWN_DRAIN_DELAY") for p in processes}
    assert delays["products-0"] == delays["users-1"] == f"{rotation_delay():g}"
    assert delays["orders"] is None
    assert delays["gateway"] is None
    no_gateway = plan("127.0.0.1", parse_replicas(["products=2"]), gateway=False)
    assert all("SHUTDOWN_DRAIN_DELAY" not in p.env for p in no_gateway)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_every_process_of_up_is_an_aioshop_serve_with_the_environment_of_the_terminal() -> None:
    for stream, expected in ((_Terminal(), "text"), (io.StringIO(), "json")):
        environment = child_environment(BaseServiceSettings(_env_file=None, env="test"), stream)  # type: ignore[call-arg]
        assert environment == {"LOG_FORMAT": expected, DEV_KEYS_WARNED_VAR: "1"}
    chosen = BaseServiceSettings(_env_file=None, env="test", log_format="json")  # type: ignore[call-arg]
    assert "LOG_FORMAT" not in child_environment(chosen, _Terminal())  # an explicit choice stays

    processes = plan("127.0.0.1", {}, environment={"LOG_FORMAT": "text"})
    assert {p.role for p in processes} == set(registry.ROLES)
    for process in processes:
        assert process.cmd[1:] == [
            "-m",
            "services.cli",
            "serve",
            process.role,
            "--host",
            "127.0.0.1",
            "--port",
            str(process.port),
        ]
        assert process.env["LOG_FORMAT"] == "text"
        assert process.env[PROCESS_NAME_VAR] == process.name


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "AIOSHOP_ENV": "test"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_bus_parked_lists_and_replay_redelivers() -> None:
    queue, key = f"test-cli-{uuid.uuid4().hex[:8]}", f"cli.{uuid.uuid4().hex[:8]}"
    transport = AmqpTransport("amqp://guest:guest@127.0.0.1:5672/")
    received: list[Incoming] = []
    healthy = False

    async def handle(message: Incoming) -> None:
        received.append(message)
        if not healthy:
            raise RuntimeError("not yet")

    await transport.start()
    try:
        await transport.consume(queue, [key], handle, retry=RetryPolicy((0.05,)))
        await transport.publish(key, b'{"n": 1}', message_id="cli-message-1")
        await wait_for(lambda: transport.parked(queue), within=10)

        code, out, err = await _cli("bus", "parked", queue, "-v")
        assert code == 0, err
        assert "cli-message-1" in out
        assert '{"n": 1}' in out
        assert "1 parked message(s)" in err

        healthy = True
        code, out, err = await _cli("bus", "replay", queue)
        assert code == 0, err
        assert "replayed 1 message(s)" in out

        async def redelivered() -> bool:
            return len(received) == 3 and received[-1].attempt == 1

        await wait_for(redelivered, within=10)
        assert await transport.parked(queue) == []
    finally:
        await transport.stop()
        await _delete_queues(queue)


async def _delete_queues(*queues: str) -> None:
    connection = await aiormq.connect("amqp://guest:guest@127.0.0.1:5672/")
    try:
        channel = await connection.channel()
        for queue in queues:
            for name in (queue, f"{queue}.parked", *(f"{queue}.retry.{ms}" for ms in RETRY_MS)):
                await channel.queue_delete(name)
    finally:
        await connection.close()


def test_children_of_aioshop_up_die_with_it_even_when_it_is_killed() -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "from services.supervisor import die_with_parent\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
            " start_new_session=True, preexec_fn=die_with_parent)\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.kill()  # SIGKILL: no handler of the parent runs
        parent.wait()

        def gone() -> bool:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return True
            with open(f"/proc/{child}/stat", encoding="ascii") as stat:
                return stat.read().split()[2] == "Z"  # exited, not yet reaped

        deadline = time.monotonic() + 5
        while not gone():
            assert time.monotonic() < deadline, "the child outlived its killed parent"
            time.sleep(0.05)  # polling interval of a wait with a deadline
    finally:
        if parent.poll() is None:
            parent.kill()
        if parent.stdout is not None:
            parent.stdout.close()

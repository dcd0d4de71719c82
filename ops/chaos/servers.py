"""The chaos run's own Redis, memcached and RabbitMQ: processes it may stop and start.

The shared servers of the machine are never touched: each ``Server`` here is a child process
on free ports with its data in a temporary directory, started by ``start`` and gone after
``close``. ``down()`` and ``up()`` in between are the faults (Redis stopped and started,
memcached stopped, RabbitMQ restarted).

Where a server's program is not installed, ``Proxied`` stands in: a fault proxy in front of the
shared server, whose ``down()`` cuts every connection and refuses new ones. The server itself
keeps running (and keeps its data), so the fault is "unreachable", not "restarted", and the
table says so (``proxied``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from ops.chaos.proxy import ProxyThread
from perf.suite.system import free_port

__all__ = ["Dependency", "Memcached", "Proxied", "RabbitMQ", "Redis", "Server", "wait_port"]

HOST = "127.0.0.1"
RABBITMQ_BIN = Path(os.environ.get("CHAOS_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))


def wait_port(port: int, *, timeout: float, alive: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts TCP connections on ``HOST:port`` (fail if ``alive`` exits
    or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"{alive.args!r} exited with {alive.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout:.0f} s")


class Dependency(Protocol):
    """A server the system depends on, which a fault takes away and gives back."""

    proxied: bool  # True: a proxy's refusal stands in for stopping the server

    @property
    def url(self) -> str:
        """Where the system reaches it."""

    def down(self) -> None:
        """Take it away (stop it, or refuse every connection)."""

    def up(self) -> None:
        """Give it back, and wait until it accepts connections."""

    def close(self) -> None:
        """Stop for good."""


class Server:
    """A server process of the run's own, on a free port, logging to ``log``."""

    name = "server"
    start_timeout = 20.0
    proxied = False

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log = workdir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where the system reaches it."""
        raise NotImplementedError

    def command(self) -> list[str]:
        """The command line of the server."""
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The server's environment (``None``: this one's)."""
        return None

    @property
    def running(self) -> bool:
        """Whether the process runs."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server (on the same port as before) and wait until it accepts."""
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(  # nosec B603: our own command line
                self.command(), stdout=output, stderr=subprocess.STDOUT, env=self.environment()
            )
        wait_port(self.port, timeout=self.start_timeout, alive=self.process)

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 15 s) and wait until its port is free."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def down(self) -> None:
        """The fault: stop it."""
        self.stop()

    def up(self) -> None:
        """Start it again."""
        self.start()

    def close(self) -> None:
        """Stop for good."""
        self.stop()

    @classmethod
    def installed(cls) -> bool:
        """Whether its program is here."""
        return True


class Redis(Server):
    """``redis-server`` without persistence."""

    name = "redis"

    @property
    def url(self) -> str:
        """Its ``redis://`` URL."""
        return f"redis://{HOST}:{self.port}/0"

    @classmethod
    def installed(cls) -> bool:
        """Whether ``redis-server`` is."""
        return shutil.which("redis-server") is not None

    def command(self) -> list[str]:
        """No snapshot, no append-only file: a restarted Redis comes back empty."""
        return [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
            "--dir", str(self.workdir), "--protected-mode", "no",
        ]  # fmt: skip


class Memcached(Server):
    """``memcached`` with 64 MB."""

    name = "memcached"

    @property
    def url(self) -> str:
        """Its ``memcached://`` URL."""
        return f"memcached://{HOST}:{self.port}"

    @classmethod
    def installed(cls) -> bool:
        """Whether ``memcached`` is."""
        return shutil.which("memcached") is not None

    def command(self) -> list[str]:
        """TCP only, on ``HOST``; ``-u root``: memcached refuses to run as root without it."""
        binary = shutil.which("memcached") or "/usr/bin/memcached"
        user = ["-u", "root"] if os.getuid() == 0 else []
        return [binary, "-p", str(self.port), "-l", HOST, "-U", "0", "-m", "64", *user]


class RabbitMQ(Server):
    """A RabbitMQ node of its own (``chaos-<pid>@localhost``): its own ports, database, logs and
    Erlang cookie, no plugins. ``restart``: the broker application stops (every connection is
    closed, connecting is refused) and starts again; the node and its durable queues stay."""

    name = "rabbitmq"
    start_timeout = 120.0

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.dist_port = free_port()
        self.node = f"chaos-{os.getpid()}@localhost"
        self.home = workdir / "rabbitmq"
        self.home.mkdir(exist_ok=True)
        (self.home / "enabled_plugins").write_text("[].\n")
        (self.home / "rabbitmq-env.conf").write_text("")

    @property
    def url(self) -> str:
        """Its AMQP URL (the default guest account: it may log in from localhost)."""
        return f"amqp://guest:guest@{HOST}:{self.port}/"

    @classmethod
    def installed(cls) -> bool:
        """Whether RabbitMQ's scripts are (``CHAOS_RABBITMQ_BIN``)."""
        return (RABBITMQ_BIN / "rabbitmq-server").is_file()

    def environment(self) -> dict[str, str]:
        """Everything of the node in ``home``; nothing read from /etc/rabbitmq."""
        home = str(self.home)
        return {
            **os.environ,
            "HOME": home,  # the Erlang cookie goes here: not the system node's
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": f"{home}/mnesia",
            "RABBITMQ_LOG_BASE": f"{home}/log",
            "RABBITMQ_PID_FILE": f"{home}/pid",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{home}/enabled_plugins",
            "RABBITMQ_ENABLED_PLUGINS": "",
            "RABBITMQ_CONFIG_FILE": f"{home}/rabbitmq",
            "RABBITMQ_ADVANCED_CONFIG_FILE": f"{home}/advanced.config",
            "RABBITMQ_CONF_ENV_FILE": f"{home}/rabbitmq-env.conf",
        }

    def command(self) -> list[str]:
        """The node in the foreground."""
        return [str(RABBITMQ_BIN / "rabbitmq-server")]

    def ctl(self, *args: str, timeout: float = 60) -> None:
        """``rabbitmqctl -n NODE args`` (raises on failure)."""
        subprocess.run(  # nosec B603: our own command line
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self.environment(),
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def start(self) -> None:
        """Start the node and wait until the broker accepts connections."""
        super().start()
        self.ctl("await_startup")

    def down(self) -> None:
        """The fault: stop the broker application (the node stays up)."""
        self.ctl("stop_app")

    def up(self) -> None:
        """Start the broker application again and wait for it."""
        self.ctl("start_app")
        self.ctl("await_startup")
        wait_port(self.port, timeout=self.start_timeout)

    def stop(self) -> None:
        """Stop the node (``rabbitmqctl stop``, SIGTERM if that fails)."""
        if self.running:
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                self.ctl("stop", timeout=60)
        super().stop()


def workdir() -> Path:
    """A new temporary directory for the run's servers."""
    return Path(tempfile.mkdtemp(prefix="aioshop-chaos-"))


class Proxied:
    """A shared server behind a fault proxy of the run (where the program is not installed)."""

    proxied = True

    def __init__(self, url: str, proxies: ProxyThread) -> None:
        target = urlsplit(url)
        self.proxies = proxies
        self.proxy = proxies.proxy(target.hostname or HOST, target.port or 0)
        credentials, _, _ = target.netloc.rpartition("@")
        here = f"{HOST}:{self.proxy.port}"
        self.url = urlunsplit(
            target._replace(netloc=f"{credentials}@{here}" if credentials else here)
        )

    def down(self) -> None:
        """Cut every connection, refuse new ones."""
        self.proxies.call(self.proxy.refuse)

    def up(self) -> None:
        """Relay again."""
        self.proxies.call(self.proxy.passthrough)

    def close(self) -> None:
        """Stop the proxy."""
        self.proxies.call(self.proxy.stop)

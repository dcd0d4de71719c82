"""perf/profile.py without a system: the process on a port, the port of a service, the message
when nothing runs, the command line, the table of the hottest functions."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from perf import profile

LISTENER = """
import socket, sys, time
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
print(sock.getsockname()[1], flush=True)
sys.stdin.read()
"""


@pytest.fixture
def listener() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A child process listening on a free port until its stdin closes, and the port."""
    with subprocess.Popen(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", LISTENER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            port = int(child.stdout.readline())  # printed once it listens
            yield child, port
        finally:
            child.stdin.close()
            child.wait(timeout=10)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_process_listening_on_the_port_is_found(
    listener: tuple[subprocess.Popen[str], int],
) -> None:
    child, port = listener

    assert profile.listening_pids(port) == [child.pid]
    target = profile.find_target("products", port)
    assert (target.pid, target.port, target.service) == (child.pid, port, "products")


def test_a_port_nobody_listens_on_is_no_system() -> None:
    port = _closed_port()

    assert profile.listening_pids(port) == []
    with pytest.raises(profile.NoSystem, match=f"port {port}"):
        profile.find_target("products", port)


def test_the_port_comes_from_the_service_variable_else_the_default() -> None:
    assert profile.service_port("products", {}) == 8002
    assert profile.service_port("gateway", {}) == 8000
    assert profile.service_port("products", {"PRODUCTS_PORT": "9102"}) == 9102
    assert profile.service_port("orders", {"PRODUCTS_PORT": "9102"}) == 8003
    with pytest.raises(ValueError, match="PRODUCTS_PORT"):
        profile.service_port("products", {"PRODUCTS_PORT": "eighty"})


def test_without_a_system_it_says_how_to_start_one(capsys: pytest.CaptureFixture[str]) -> None:
    port = _closed_port()

    status = profile.main(["--service", "products", "--host", f"http://127.0.0.1:{port}"])

    assert status == 2
    err = capsys.readouterr().err
    assert f"no gateway answers http://127.0.0.1:{port}/healthz" in err
    assert "make run" in err
    assert "RATE_LIMIT_DEFAULT=" in err


def test_a_gateway_without_the_service_is_no_system_either(
    listener: tuple[subprocess.Popen[str], int],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(profile, "_gateway_answers", lambda host: True)
    port = _closed_port()

    status = profile.main(["--service", "orders", "--port", str(port)])

    assert status == 2
    assert f"no process listens on port {port} (the orders service)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--service", "payments"], "invalid choice"),
        (["--service", "products", "--duration", "0"], "must be > 0"),
        (["--service", "products", "--duration", "601"], "must be > 0"),
        (["--service", "products", "--users", "-3"], "must be > 0"),
        (["--service", "products", "--users", "two"], "invalid"),
        (["--service", "products", "--host", "ftp://127.0.0.1"], "an http(s) URL"),
        (["--service", "products", "--port", "70000"], "must be > 0"),
        ([], "required: --service"),
    ],
)
def test_invalid_arguments_are_refused(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        profile.parse_args(argv)

    assert exited.value.code == 2
    assert complaint in capsys.readouterr().err


def test_the_defaults() -> None:
    args = profile.parse_args(["--service", "gateway"])

    assert (args.duration, args.users, args.host) == (20.0, 20, "http://127.0.0.1:8000")
    assert str(args.out) == "perf/reports"


def test_the_table_counts_own_samples_per_function_not_per_line() -> None:
    raw = "\n".join(
        [
            "main (a.py:1);handler (b.py:10);json_dumps (c.py:5) 6",
            "main (a.py:1);handler (b.py:12) 3",
            "main (a.py:1);handler (b.py:10);json_dumps (c.py:7) 1",
            "main (a.py:2) 10",
            "",
        ]
    )

    assert profile.top_own(raw, 2) == [
        ("main (a.py)", 10, 0.5),
        ("json_dumps (c.py)", 7, 0.35),
    ]
    assert profile.top_own("") == []

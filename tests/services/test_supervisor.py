"""``aioshop up``'s supervisor: crashed processes restarted with a backoff, given up after too
many crashes, rolling restarts over its control socket. Real child processes (tiny HTTP servers
of this file), a fake clock for the policy alone."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.testing import free_port
from services.cli.restart import cmd_restart
from services.control import running_supervisor
from services.restart_policy import CrashHistory, RestartPolicy

# A child: answers 200 on every path on --port; exits with status CODE after LIFE seconds
# (never when LIFE is 0). SIGTERM makes it exit 0 after DRAIN seconds. If the file BROKEN
# exists when it starts, it exits with status 2 at once.
CHILD = """
import http.server, os, signal, sys, threading, time
port, life, code, drain = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
if os.path.exists(sys.argv[5]):
    sys.exit(2)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.allow_reuse_address = True
def term(*_):
    time.sleep(drain); sys.exit(0)
signal.signal(signal.SIGTERM, term)
threading.Thread(target=server.serve_forever, daemon=True).start()
if life:
    time.sleep(life); sys.exit(code)
while True:
    time.sleep(1)
"""

# The supervisor under test, in a process of its own (it owns the signals of its main thread).
SUPERVISOR = """
import json, sys
from pathlib import Path
from services.up import Process
from services.supervisor import RestartPolicy, Supervisor
spec = json.loads(sys.argv[1])
processes = [Process(p["name"], p["role"], p["cmd"], p["port"], front=p.get("front", False),
                     env=p.get("env", {})) for p in spec["processes"]]
policy = RestartPolicy(base=0.05, cap=0.2, give_up_after=spec["give_up_after"], window=60)
supervisor = Supervisor(processes, "127.0.0.1", data_dir=Path(spec["data_dir"]), policy=policy,
                        ready_timeout=20, settle=0.2)
sys.exit(supervisor.run())
"""


def _child(
    name: str,
    role: str,
    *,
    life: float = 0,
    code: int = 3,
    drain: float = 0.0,
    front: bool = False,
    broken: Path | None = None,
) -> dict[str, object]:
    port = free_port()
    marker = str(broken or "/nonexistent/broken")
    cmd = [sys.executable, "-c", CHILD, str(port), str(life), str(code), str(drain), marker]
    return {"name": name, "role": role, "cmd": cmd, "port": port, "front": front}


class Running:
    """A supervisor process and what it printed."""

    def __init__(self, process: subprocess.Popen[str], data_dir: Path, log: Path) -> None:
        self.process = process
        self.data_dir = data_dir
        self.log = log

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, condition: Callable[[], bool], within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not condition():
            assert self.process.poll() is None or condition(), self.output()
            assert time.monotonic() < deadline, f"{what}; the supervisor said:\n{self.output()}"
            time.sleep(0.05)  # polling interval of a wait with a deadline

    def pids(self) -> dict[str, int | None]:
        state = running_supervisor(self.data_dir)
        assert state is not None, self.output()
        return {p["name"]: p["pid"] for p in state["processes"]}


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Short: a Unix socket path holds about 100 bytes, pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="up-") as directory:
        yield Path(directory) / "state"


@pytest.fixture
def supervise(data_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(processes: list[dict[str, object]], *, give_up_after: int = 5) -> Running:
        spec = {"processes": processes, "data_dir": str(data_dir), "give_up_after": give_up_after}
        log = tmp_path / f"supervisor-{len(started)}.log"
        with log.open("w") as output:
            process = subprocess.Popen(  # noqa: S603
                [sys.executable, "-c", SUPERVISOR, json.dumps(spec)],
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
            )
        running = Running(process, data_dir, log)
        started.append(running)
        running.wait_for(lambda: "Ctrl-C stops everything" in running.output(), 30, "not up")
        return running

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()  # its children get SIGINT (PR_SET_PDEATHSIG)
        running.process.wait()


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().split()[2] != "Z"


# -- the policy, on a fake clock ---------------------------------------------------------------


def test_the_backoff_doubles_from_base_to_cap_with_full_jitter() -> None:
    policy = RestartPolicy(base=0.5, cap=4.0, give_up_after=100, window=1000)
    history = CrashHistory(policy, rand=lambda: 1.0)  # the top of every jitter range
    delays = [history.crashed(float(t)) for t in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    low = CrashHistory(policy, rand=lambda: 0.0)
    assert low.crashed(0.0) == 0.0  # full jitter: anywhere from nothing to the ceiling


def test_it_gives_up_at_the_nth_crash_within_the_window_only() -> None:
    policy = RestartPolicy(base=0.5, cap=30, give_up_after=5, window=60)
    history = CrashHistory(policy, rand=lambda: 0.5)
    assert all(history.crashed(t) is not None for t in (0.0, 10.0, 20.0, 30.0))
    assert history.crashed(40.0) is None  # 5 within 60 s

    spread = CrashHistory(policy, rand=lambda: 0.5)
    for crash in range(20):  # one every 16 s: never 5 within a minute
        assert spread.crashed(crash * 16.0) is not None
    assert spread.recent == 4


def test_a_policy_that_cannot_work_is_refused() -> None:
    with pytest.raises(ValueError, match="give_up_after"):
        RestartPolicy(give_up_after=0)
    with pytest.raises(ValueError, match="base <= cap"):
        RestartPolicy(base=2, cap=1)


# -- real children -----------------------------------------------------------------------------


def test_a_killed_process_is_restarted_on_its_port_and_the_others_keep_running(
    supervise: Callable[..., Running],
) -> None:
    running = supervise([_child("steady", "svc"), _child("victim", "svc")])
    before = running.pids()
    assert running.data_dir.stat().st_mode & 0o777 == 0o700
    assert (running.data_dir / "up.sock").stat().st_mode & 0o777 == 0o600
    assert (running.data_dir / "up.json").stat().st_mode & 0o777 == 0o600
    victim = before["victim"]
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    running.wait_for(lambda: "victim is ready again" in running.output(), 10, "not back")
    output = running.output()
    assert "victim was killed by SIGKILL; restarting it in" in output, output
    assert "victim started again (pid" in output, output
    after = running.pids()
    assert after["victim"] not in (None, victim)
    assert after["steady"] == before["steady"]
    assert _alive(before["steady"])
    assert running.process.poll() is None

    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(timeout=20) == 0
    assert not (running.data_dir / "up.json").exists()
    assert not (running.data_dir / "up.sock").exists()
    assert not _alive(after["victim"])
    assert not _alive(before["steady"])


def test_losing_the_data_directory_does_not_stop_the_healing(
    supervise: Callable[..., Running],
) -> None:
    """The state file is for `aioshop restart`: a removed data directory (a `git clean`) must
    not turn the next crash into stopping everything."""
    running = supervise([_child("steady", "svc"), _child("victim", "svc")])
    victim = running.pids()["victim"]
    assert victim is not None
    shutil.rmtree(running.data_dir)
    os.kill(victim, signal.SIGKILL)
    running.wait_for(lambda: "victim is ready again" in running.output(), 10, "not back")
    assert "cannot write the state in" in running.output()
    assert running.process.poll() is None


def test_a_data_directory_open_to_others_is_closed_and_a_symlink_is_refused(
    supervise: Callable[..., Running], data_dir: Path, tmp_path: Path
) -> None:
    data_dir.mkdir(mode=0o777)
    data_dir.chmod(0o777)  # whatever the umask
    running = supervise([_child("one", "svc")])
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert running.pids()["one"] is not None
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(timeout=20) == 0

    target = tmp_path / "elsewhere"
    target.mkdir()
    shutil.rmtree(data_dir)
    data_dir.symlink_to(target)
    running = supervise([_child("one", "svc")])
    assert "is not a directory (a symbolic link?): no `aioshop restart`" in running.output()
    assert not (target / "up.json").exists()


def test_a_process_crashing_again_and_again_is_given_up_and_the_rest_runs_on(
    supervise: Callable[..., Running],
) -> None:
    running = supervise(
        [_child("steady", "svc"), _child("flaky", "svc", life=0.5, code=3)], give_up_after=3
    )
    steady = running.pids()["steady"]
    running.wait_for(lambda: "GIVING UP" in running.output(), 20, "never gave up")
    output = running.output()
    assert output.count("flaky exited with status 3; restarting it in") == 2, output
    assert "flaky exited with status 3: 3 crashes within 60 s, GIVING UP on it" in output
    assert "the others keep running" in output
    state = running_supervisor(running.data_dir)
    assert state is not None
    by_name = {p["name"]: p for p in state["processes"]}
    assert by_name["flaky"]["state"] == "given up"
    assert by_name["steady"]["state"] == "running"
    assert by_name["steady"]["pid"] == steady
    # Still supervising after giving up on one: another crash is healed as before.
    assert steady is not None
    os.kill(steady, signal.SIGKILL)
    running.wait_for(lambda: "steady is ready again" in running.output(), 10, "not back")
    assert running.process.poll() is None
    assert running.output().count("flaky exited with status 3") == 3  # not started again
    assert _alive(running.pids()["steady"])
    running.process.send_signal(signal.SIGINT)
    assert running.process.wait(timeout=20) == 0


def test_giving_up_on_the_gateway_stops_everything_with_status_1(
    supervise: Callable[..., Running],
) -> None:
    running = supervise(
        [_child("svc", "svc"), _child("gateway", "gateway", life=0.5, front=True)],
        give_up_after=2,
    )
    steady = running.pids()["svc"]
    assert running.process.wait(timeout=20) == 1
    assert "nothing can be served without the gateway: stopping" in running.output()
    deadline = time.monotonic() + 10
    while _alive(steady):
        assert time.monotonic() < deadline, "the service outlived its supervisor"
        time.sleep(0.05)  # polling interval of a wait with a deadline


def _restart(data_dir: Path, service: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    args = argparse.Namespace(service=service, data_dir=str(data_dir), timeout=60.0)
    code = cmd_restart(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_restart_replaces_each_instance_of_a_role_one_after_the_other(
    supervise: Callable[..., Running], capsys: pytest.CaptureFixture[str]
) -> None:
    running = supervise(
        [_child("svc-0", "svc", drain=0.3), _child("svc-1", "svc", drain=0.3), _child("o", "o")]
    )
    before = running.pids()
    code, said = _restart(running.data_dir, "svc", capsys)
    assert code == 0, said + running.output()
    after = running.pids()
    assert after["svc-0"] not in (None, before["svc-0"])
    assert after["svc-1"] not in (None, before["svc-1"])
    assert after["o"] == before["o"]
    lines = said.splitlines()
    # One at a time: the second drains only once the first's replacement is ready.
    first_ready = next(i for i, line in enumerate(lines) if line.startswith("svc-0: ready in"))
    second_draining = next(i for i, line in enumerate(lines) if line.startswith("svc-1: draining"))
    assert first_ready < second_draining, said
    assert "stopped (exited with status 0)" in said
    assert lines[-1] == "every svc instance replaced"
    assert "restarting it in" not in running.output()  # a planned stop is no crash

    code, said = _restart(running.data_dir, "nope", capsys)
    assert code == 1
    assert "'nope' is not one of svc, o" in said


def test_restart_without_a_running_supervisor_says_so(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, said = _restart(data_dir, "products", capsys)
    assert code == 1
    assert "no `aioshop up` is running with data directory" in said

    data_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (data_dir / "up.json").write_text(json.dumps({"pid": dead.pid, "socket": "x"}))
    code, said = _restart(data_dir, "products", capsys)
    assert code == 1
    assert "no `aioshop up` is running" in said


def test_a_restart_whose_new_process_fails_says_so_and_the_crash_policy_takes_over(
    supervise: Callable[..., Running], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    running = supervise(
        [_child("svc-0", "svc", broken=broken), _child("svc-1", "svc", broken=broken)],
        give_up_after=2,
    )
    before = running.pids()
    broken.touch()  # from now on a new process of svc exits at once
    code, said = _restart(running.data_dir, "svc", capsys)
    assert code == 1
    assert "svc-0: the new process exited before it was ready" in said
    running.wait_for(lambda: "GIVING UP" in running.output(), 20, "never gave up")
    # The restart stopped at the first instance: the second one still runs, untouched.
    assert running.pids()["svc-1"] == before["svc-1"]
    assert running.process.poll() is None

    broken.unlink()  # fixed: a restart starts the given-up instance again
    code, said = _restart(running.data_dir, "svc", capsys)
    assert code == 0, said
    assert "svc-0 was given up: starting it again" in said
    assert all(pid is not None for pid in running.pids().values())

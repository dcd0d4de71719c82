"""``aioshop up``'s supervisor: starts a plan's processes (``services.up.plan``), keeps them
running, replaces them one by one on request, stops them together.

A process that exits once the system is up is started again (same command, same port) after a
``RestartPolicy`` backoff, and given up after too many crashes in a short time; the others keep
running meanwhile, and the gateway takes the instance out of rotation and back in by itself
(it polls every instance's ``/readyz``). Each crash, restart, return and give-up is one line on
stderr. Giving up on the gateway stops everything (exit status 1): nothing can be served without
it. A process that exits during the first start stops everything too: that is a configuration
problem, not a crash.

With a data directory, ``aioshop restart ROLE`` reaches it through ``services.control``; the
restart (``Supervisor._roll``) replaces the role's instances one at a time, each drained first:
SIGTERM makes a child fail its ``/readyz`` and serve on for its ``SHUTDOWN_DRAIN_DELAY`` (which
``plan`` sets for replicated services), so that the gateway takes it out of rotation before it
stops accepting. Ctrl-C of ``aioshop up`` sends SIGINT instead: no drain delay, the gateway goes
first anyway.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.control import Control, Request
from services.restart_policy import CrashHistory, RestartPolicy

if TYPE_CHECKING:
    from services.process import Process

__all__ = ["DRAIN_DELAY_VAR", "CrashHistory", "RestartPolicy", "Supervisor"]

DRAIN_DELAY_VAR = "SHUTDOWN_DRAIN_DELAY"
TICK = 0.2  # seconds between two rounds of the supervisor


@dataclass(eq=False)
class _Slot:
    """One process of the plan and the state of its current child."""

    process: Process
    history: CrashHistory
    child: subprocess.Popen[bytes] | None = None
    restart_at: float | None = None  # when to start it again after a crash
    down_since: float | None = None  # when it crashed, until it is ready again
    next_probe: float = 0.0
    gave_up: bool = False
    rolling: bool = False  # stopped on purpose by a rolling restart: its exit is expected

    @property
    def state(self) -> str:
        if self.gave_up:
            return "given up"
        if self.child is None:
            return "restarting"
        return "starting" if self.down_since is not None else "running"


class _RollFailed(Exception):
    """A rolling restart cannot go on (a new process did not become ready)."""


@dataclass(eq=False)
class _Roll:
    """A rolling restart in progress: the request it answers and its steps."""

    request: Request
    steps: Iterator[None]


class Supervisor:
    """Starts a plan's processes, waits for them to be ready, keeps them running (see the module
    docstring), stops them all together. With ``data_dir``, ``aioshop restart`` reaches it."""

    def __init__(
        self,
        processes: Sequence[Process],
        host: str,
        *,
        ready_timeout: float = 60,
        data_dir: Path | None = None,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        settle: float | None = None,
        on_state: Callable[[list[dict[str, Any]], str], None] | None = None,
    ):
        self.processes = list(processes)
        self.host = host
        self.ready_timeout = ready_timeout
        self.data_dir = data_dir
        self.policy = policy or RestartPolicy()
        self.clock = clock
        self.slots = {
            p.name: _Slot(p, CrashHistory(self.policy, rand=rand)) for p in self.processes
        }
        if settle is None:  # the gateway sees the new instance ready before the next one goes
            settle = _gateway_settle() if self._role_running("gateway") else 0.0
        self.settle = settle
        self.on_state = on_state  # told every change (services.monitoring.TargetsFile)
        self._stopping = False
        self._state_failed = False
        self._control: Control | None = None
        self._roll: _Roll | None = None

    @property
    def children(self) -> dict[str, subprocess.Popen[bytes]]:
        """The running child of each process that has one."""
        return {name: s.child for name, s in self.slots.items() if s.child is not None}

    def run(self) -> int:
        """Start everything, print the URLs, keep it running until Ctrl-C, SIGTERM or SIGHUP
        (0), or until the gateway is given up or a process fails its first start (1)."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # HUP: terminal closed
            signal.signal(signum, self._stop)
        try:
            for front in (False, True):
                group = [p for p in self.processes if p.front is front]
                for process in group:
                    self._start(self.slots[process.name])
                if not self._wait_ready(group):
                    return 1
            if self.data_dir is not None:
                self._control = Control.open(self.data_dir, self._say)
            self._write_state()
            self._print_urls()
            while not self._stopping:
                if self.tick():
                    return 1
                time.sleep(TICK)  # the supervisor's polling interval
            return 0
        finally:
            if self._roll is not None:
                self._roll.request.finish(False, "aioshop up is stopping")
            if self._control is not None:
                self._control.close()
            self.terminate()

    def tick(self) -> bool:
        """One round: notice exits, restart what is due, advance a rolling restart, answer
        ``aioshop restart``. ``True`` when everything must stop (the gateway was given up)."""
        now = self.clock()
        for slot in self.slots.values():
            child = slot.child
            if child is not None and not slot.rolling and child.poll() is not None:
                slot.child = None
                if self._crashed(slot, child.returncode, now):
                    return True
            if slot.child is None and slot.restart_at is not None and now >= slot.restart_at:
                slot.restart_at = None
                try:
                    self._start(slot)
                except OSError as exc:  # fork or exec failed (memory, process limits): a crash
                    self._say(f"{slot.process.name} could not be started again: {exc}")
                    if self._crashed(slot, 1, now):
                        return True
                    continue
                self._say(f"{slot.process.name} started again (pid {self._pid(slot)})")
            if slot.down_since is not None and slot.child is not None and now >= slot.next_probe:
                slot.next_probe = now + 0.5
                if _ready(self._readyz(slot), timeout=0.5):
                    back = self.clock() - slot.down_since
                    slot.down_since = None
                    self._say(
                        f"{slot.process.name} is ready again, {back:.1f} s after it went down"
                    )
                    self._write_state()
        self._step_roll()
        if self._control is not None:
            for request in self._control.accept():
                self._requested(request)
        return False

    def _crashed(self, slot: _Slot, returncode: int, now: float) -> bool:
        name = slot.process.name
        how = _exit_description(returncode)
        delay = slot.history.crashed(now)
        policy = self.policy
        if delay is None:
            slot.gave_up = True
            slot.down_since = None
            self._write_state()
            crashes = f"{slot.history.recent} crashes within {policy.window:g} s"
            if slot.process.role == "gateway":
                self._say(
                    f"{name} {how}: {crashes}, giving up on it; nothing can be served without "
                    "the gateway: stopping"
                )
                return True
            self._say(
                f"{name} {how}: {crashes}, GIVING UP on it (`aioshop restart "
                f"{slot.process.role}` starts it again); the others keep running"
            )
            return False
        slot.restart_at = now + delay
        if slot.down_since is None:
            slot.down_since = now
        self._say(
            f"{name} {how}; restarting it in {delay:.1f} s (crash {slot.history.recent} within "
            f"{policy.window:g} s; given up at {policy.give_up_after})"
        )
        self._write_state()
        return False

    def _stop(self, signum: int, frame: object) -> None:
        self._stopping = True

    def _start(self, slot: _Slot) -> subprocess.Popen[bytes]:
        process = slot.process
        env = {**os.environ, **process.env}
        # start_new_session: Ctrl-C reaches only this parent, which stops the children in order.
        slot.child = subprocess.Popen(  # noqa: S603
            process.cmd, env=env, start_new_session=True, preexec_fn=die_with_parent
        )
        slot.next_probe = 0.0
        self._write_state()
        return slot.child

    @staticmethod
    def _pid(slot: _Slot) -> int | None:
        return slot.child.pid if slot.child is not None else None

    def _readyz(self, slot: _Slot) -> str:
        return f"{slot.process.url(self.host)}{slot.process.ready_path}"

    def _wait_ready(self, group: Sequence[Process]) -> bool:
        deadline = time.monotonic() + self.ready_timeout
        pending = {p.name: p for p in group}
        while pending and not self._stopping:
            for name in list(pending):
                slot = self.slots[name]
                if slot.child is None or slot.child.poll() is not None:
                    print(f"{name} exited before it was ready; stopping", file=sys.stderr)
                    return False
                if _ready(self._readyz(slot)):
                    del pending[name]
            if time.monotonic() > deadline:
                print(f"not ready in time: {', '.join(pending)}; stopping", file=sys.stderr)
                return False
            time.sleep(TICK)
        return not pending

    def _print_urls(self) -> None:
        by_name = {p.name: p for p in self.processes}
        print("\naioshop is up:")
        if "gateway" in by_name:
            base = by_name["gateway"].url(self.host)
            print(f"  gateway    {base}   docs {base}/docs   (use this one)")
            if "dashboard" in by_name:
                print(f"  dashboard  {base}/dashboard")
        for process in self.processes:
            if process.name == "gateway":
                continue
            base = process.url(self.host)
            page = f"{base}/dashboard" if process.role == "web" else f"docs {base}/docs"
            if process.ready_path != "/readyz":  # not an aioshop process (Prometheus)
                page = ""
            print(f"  {process.name:<10} {base}   {page}")
        if self._control is not None:
            print("`aioshop restart SERVICE` replaces a service's instances one by one.")
        print("Ctrl-C stops everything.\n", flush=True)

    @staticmethod
    def _say(line: str) -> None:
        print(f"aioshop up: {line}", file=sys.stderr, flush=True)

    def terminate(self) -> None:
        """SIGINT every process, the front ones first (SIGINT: they drain without waiting to be
        taken out of rotation, the gateway goes first anyway); SIGKILL what outlives its stop
        budget (three SHUTDOWN_TIMEOUTs and a margin: requests, handlers, outbox flush)."""
        order = sorted(self.children.items(), key=lambda kv: not self._is_front(kv[0]))
        for _, child in order:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        budget = max((_stop_budget(s.process) for s in self.slots.values()), default=15.0)
        deadline = time.monotonic() + budget
        for name, child in order:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop in time; killing it", file=sys.stderr)
                child.kill()
                child.wait()

    def _is_front(self, name: str) -> bool:
        return self.slots[name].process.front

    def _role_running(self, role: str) -> bool:
        return any(p.role == role for p in self.processes)

    def _write_state(self) -> None:
        """Best effort: the state file serves ``aioshop restart``; failing to write it (the
        data directory removed, a full disk) must not stop the system it describes."""
        if self.on_state is not None:
            self.on_state(self._states(), self.host)
        if self._control is None:
            return
        try:
            self._write_state_file()
        except OSError as exc:
            if not self._state_failed:
                self._say(f"cannot write the state in {self.data_dir} ({exc}); going on without")
            self._state_failed = True
        else:
            self._state_failed = False

    def _write_state_file(self) -> None:
        assert self._control is not None
        self._control.write_state(self._states(), self.host)

    def _states(self) -> list[dict[str, Any]]:
        return [
            {
                "name": slot.process.name,
                "role": slot.process.role,
                "port": slot.process.port,
                "url": slot.process.url(self.host),
                "pid": self._pid(slot),
                "state": slot.state,
            }
            for slot in self.slots.values()
        ]

    # -- rolling restarts ---------------------------------------------------------------------

    def _requested(self, request: Request) -> None:
        if self._roll is not None:
            role = self._roll.request.role
            request.finish(False, f"a restart of {role} is under way: try again after it")
        elif not self._role_running(request.role):
            roles = ", ".join(dict.fromkeys(p.role for p in self.processes))
            request.finish(False, f"{request.role!r} is not one of {roles}")
        else:
            self._roll = _Roll(request, self._replace(request))

    def _step_roll(self) -> None:
        roll = self._roll
        if roll is None:
            return
        try:
            next(roll.steps)
        except StopIteration:
            roll.request.finish(True, f"every {roll.request.role} instance replaced")
        except _RollFailed as exc:
            self._say(f"restart of {roll.request.role} stopped: {exc}")
            roll.request.finish(False, str(exc))
        else:
            return
        self._roll = None

    def _replace(self, request: Request) -> Iterator[None]:
        """Replace every instance of the role, one at a time; yields while it waits (the loop
        goes on around it). Each old one gets SIGTERM: it fails its readiness, serves on for
        its ``SHUTDOWN_DRAIN_DELAY`` (the gateway takes it out of rotation meanwhile), finishes
        its requests and exits; the new one starts on the same port, and the next instance goes
        only once it is ready and the gateway had time to see it so."""

        def say(line: str) -> None:
            self._say(line)
            request.send({"say": line})

        role = request.role
        slots = [slot for slot in self.slots.values() if slot.process.role == role]
        if len(slots) == 1:
            say(f"{role} has one instance: requests to it fail while it restarts")
        for index, slot in enumerate(slots):
            name = slot.process.name
            if slot.gave_up:
                say(f"{name} was given up: starting it again")
            slot.gave_up = False
            slot.history.clear()
            slot.restart_at = None
            old = slot.child
            if old is not None and old.poll() is None:
                slot.rolling = True
                delay = _seconds(slot.process, DRAIN_DELAY_VAR, 0.0)
                say(f"{name}: draining (pid {old.pid}; out of rotation for {delay:g} s first)")
                stopping = self.clock()
                deadline = stopping + delay + _stop_budget(slot.process)
                old.send_signal(signal.SIGTERM)
                while old.poll() is None:
                    if self.clock() > deadline:
                        say(f"{name} did not stop in time: killing it")
                        old.kill()
                    yield
                slot.rolling = False
                stopped = _exit_description(old.returncode)
                say(f"{name}: stopped ({stopped}) after {self.clock() - stopping:.1f} s")
            slot.child = None
            try:
                new = self._start(slot)
            except OSError as exc:
                raise _RollFailed(f"{name}: could not be started: {exc}") from exc
            starting = self.clock()
            slot.down_since = None
            say(f"{name}: started (pid {new.pid}), waiting until it is ready")
            while not _ready(self._readyz(slot), timeout=0.5):
                if slot.child is not new or new.poll() is not None:
                    raise _RollFailed(f"{name}: the new process exited before it was ready")
                if self.clock() - starting > self.ready_timeout:
                    raise _RollFailed(f"{name}: not ready within {self.ready_timeout:g} s")
                yield
            say(f"{name}: ready in {self.clock() - starting:.1f} s")
            if index < len(slots) - 1 and self.settle > 0:
                settled = self.clock() + self.settle
                while self.clock() < settled:
                    yield


def _exit_description(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _seconds(process: Process, variable: str, default: float) -> float:
    value = process.env.get(variable, os.environ.get(variable))
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default


def _gateway_settle() -> float:
    """Seconds until the gateway has checked an instance ready enough times to route to it."""
    from gateway.settings import Settings as GatewaySettings

    settings = GatewaySettings()
    return float(
        settings.health_interval * settings.healthy_threshold + settings.health_timeout + 0.5
    )


def _stop_budget(process: Process) -> float:
    """Seconds a process may take to stop after its drain delay: its requests, its consumers'
    handlers and its outbox flush, each bounded by SHUTDOWN_TIMEOUT, and a margin."""
    return 3 * _seconds(process, "SHUTDOWN_TIMEOUT", 10.0) + 5


def die_with_parent() -> None:
    """In the child, before exec: SIGINT it when this supervisor dies, even by SIGKILL (Linux's
    PR_SET_PDEATHSIG), so no service outlives ``aioshop up`` and holds its port. SIGINT, not
    SIGTERM: it stops without a drain delay (the gateway goes down with the supervisor)."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGINT)


def _ready(url: str, *, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310  # nosec B310: our own http:// URL
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False

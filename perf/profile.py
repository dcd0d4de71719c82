"""A flame graph of one process of the running system, recorded while Locust loads the gateway.

Run from the project root, with the system running (``make run`` in another terminal, rate limits
raised as in README, Benchmarks)::

    .venv/bin/python -m perf.profile --service products [--duration 20] [--users 20] \\
        [--host http://127.0.0.1:8000] [--out perf/reports/]

Steps:

1. the process to profile is the one listening on the service's port: ``<SERVICE>_PORT`` from
   the environment (``GATEWAY_PORT``, ``USERS_PORT``, ``PRODUCTS_PORT``, ``ORDERS_PORT``,
   ``WEB_PORT``), else its default (8000, 8001, 8002, 8003, 8080), or ``--port``. With
   replicas (``aioshop up --replicas products=3``) the first one, on the configured port, is
   profiled, and the others are listed;
2. Locust runs ``perf/locustfile.py`` headless against ``--host`` (the gateway) with ``--users``
   users (``--think 0``: without think times, for a process busy enough to show its hot path),
   for a ramp-up plus ``--duration`` seconds; its summary goes to
   ``<out>/profile-<service>-<time>-locust.log`` and its CSV statistics beside it;
3. once the users are spawned, py-spy samples the process for ``--duration`` seconds without
   stopping it (``--nonblocking``), twice at once: ``--format flamegraph`` for
   ``<out>/profile-<service>-<time>.svg`` and ``--format raw`` for the table printed at the end,
   the 15 functions with the most samples of their own (time in the function itself, not in
   what it calls).

py-spy reads the process's memory with ``ptrace``/``process_vm_readv``: it needs the same user
and, where ``kernel.yama.ptrace_scope`` is 1 or more (most desktop distributions), root or
``CAP_SYS_PTRACE`` (``sudo``, or ``--cap-add SYS_PTRACE`` in a container). When it cannot
attach, nothing is recorded and the command prints the fallback, pyinstrument, which cannot
attach to a running process either: that one service is restarted under it (stop it, then run
``.venv/bin/pyinstrument -r html -o <out>/profile-<service>-<time>.html .venv/bin/aioshop serve
<service> --port <port>``, run ``make load``, stop the service with Ctrl-C: pyinstrument writes
the HTML page when the process ends). The gateway's health checks take the instance out while it
restarts and back in once it answers.

With no system answering, it says how to start one (as ``make load`` does) and exits with 2; a
process py-spy cannot attach to gives 3; the Locust run's own failures are reported, not fatal.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

__all__ = [
    "DEFAULT_PORTS",
    "NoSystem",
    "Target",
    "find_target",
    "listening_pids",
    "main",
    "parse_args",
    "service_port",
    "top_own",
]

# The roles of ``aioshop up``, their port variables and default ports.
DEFAULT_PORTS: dict[str, tuple[str, int]] = {
    "gateway": ("GATEWAY_PORT", 8000),
    "users": ("USERS_PORT", 8001),
    "products": ("PRODUCTS_PORT", 8002),
    "orders": ("ORDERS_PORT", 8003),
    "web": ("WEB_PORT", 8080),
}
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
START_HINT = (
    "start the system in another terminal, with the gateway's limits raised and an admin for "
    "the restocking scenario (README, Benchmarks):\n"
    "    RATE_LIMIT_DEFAULT=1000000/60 RATE_LIMIT_AUTH=1000000/60 \\\n"
    "      ADMIN_EMAIL=admin@example.com ADMIN_PASSWORD=a-long-password make run\n"
    "then run this again with the same ADMIN_EMAIL and ADMIN_PASSWORD in the environment"
)
TOP = 15


class NoSystem(Exception):
    """Nothing to profile: the system (or the service) is not running."""


@dataclass(frozen=True)
class Target:
    """The process to profile, and the other processes of the same service (replicas)."""

    service: str
    port: int
    pid: int
    others: tuple[tuple[int, int], ...] = ()  # (pid, port) of the replicas not profiled


def service_port(service: str, environ: dict[str, str] | None = None) -> int:
    """The port ``service`` listens on: its ``<SERVICE>_PORT`` variable, else its default."""
    variable, default = DEFAULT_PORTS[service]
    value = (os.environ if environ is None else environ).get(variable, "").strip()
    if not value:
        return default
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"{variable}={value!r} is not a port")
    return int(value)


def listening_pids(port: int) -> list[int]:
    """The ids of the processes listening on TCP ``port`` (any address), lowest first."""
    pids = {
        conn.pid
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
        if conn.pid is not None
    }
    return sorted(pids)


def _replicas(service: str, exclude: int) -> list[tuple[int, int]]:
    """Other ``aioshop serve <service>`` processes (replicas on free ports), with their ports."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info["pid"] == exclude or "serve" not in cmdline:
            continue
        index = cmdline.index("serve")
        if cmdline[index + 1 : index + 2] != [service]:
            continue
        port = next(
            (int(cmdline[i + 1]) for i, arg in enumerate(cmdline[:-1]) if arg == "--port"), 0
        )
        found.append((proc.info["pid"], port))
    return sorted(found)


def find_target(service: str, port: int) -> Target:
    """The process listening on ``port``; ``NoSystem`` if none does."""
    pids = listening_pids(port)
    if not pids:
        raise NoSystem(f"no process listens on port {port} (the {service} service)")
    return Target(service, port, pids[0], tuple(_replicas(service, pids[0])))


def top_own(raw: str, count: int = TOP) -> list[tuple[str, int, float]]:
    """From py-spy's ``--format raw`` (``frame;frame;... samples`` a line): the functions with
    the most samples as the innermost frame, as (function (file), samples, share of all)."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        total += int(samples)
        leaf = stack.rsplit(";", 1)[-1]
        own[re.sub(r":\d+\)$", ")", leaf)] += int(samples)  # one row per function, not line
    return [(name, n, n / total) for name, n in own.most_common(count)] if total else []


def _positive(kind: type[int] | type[float], upper: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if not 0 < value <= upper:
            raise argparse.ArgumentTypeError(f"must be > 0 and <= {upper:g}, not {text}")
        return value

    return parse


def _http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"an http(s) URL, not {text!r}")
    return text.rstrip("/")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (``--help``); invalid values exit with 2 and say why."""
    parser = argparse.ArgumentParser(
        prog="python -m perf.profile",
        description="A flame graph of a running service under the Locust load.",
    )
    parser.add_argument("--service", required=True, choices=sorted(DEFAULT_PORTS))
    parser.add_argument("--duration", type=_positive(float, 600), default=20.0, help="seconds")
    parser.add_argument("--users", type=_positive(int, 10_000), default=20)
    parser.add_argument("--spawn-rate", type=_positive(float, 10_000), default=10.0)
    parser.add_argument("--host", type=_http_url, default="http://127.0.0.1:8000")
    parser.add_argument("--out", type=Path, default=Path("perf/reports"))
    parser.add_argument("--port", type=_positive(int, 65535), help="instead of <SERVICE>_PORT")
    parser.add_argument("--rate", type=_positive(int, 1000), default=100, help="samples/s")
    parser.add_argument(
        "--think",
        type=float,
        default=None,
        help="AIOSHOP_LOAD_THINK for Locust: the think times' scale (0: flat out; default 1)",
    )
    return parser.parse_args(argv)


def _gateway_answers(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"{host}/healthz", timeout=5):  # noqa: S310  # nosec B310
            return True
    except (urllib.error.URLError, OSError):
        return False


def _tool(name: str) -> str:
    """A console script of this virtualenv, else of the PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise NoSystem(f"{name} is not installed: pip install -e '.[bench]'")
    return found


def _can_attach(py_spy: str, pid: int) -> str | None:
    """``None`` if py-spy can read ``pid``, else what it said."""
    done = subprocess.run(
        [py_spy, "dump", "--pid", str(pid), "--nonblocking"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return None if done.returncode == 0 else (done.stderr or done.stdout).strip()


def _pyinstrument_hint(args: argparse.Namespace, target: Target, html: Path) -> str:
    pyinstrument, aioshop = _tool("pyinstrument"), Path(sys.executable).with_name("aioshop")
    return (
        "fallback, pyinstrument (it cannot attach either: the service runs under it):\n"
        f"  1. stop the {target.service} process (pid {target.pid})\n"
        f"  2. {pyinstrument} -r html -o {html} {aioshop} serve {target.service}"
        f" --port {target.port}\n"
        f"  3. make load LOAD_USERS={args.users} LOAD_TIME={int(args.duration)}s\n"
        "  4. Ctrl-C the service: pyinstrument writes the page as it exits"
    )


def _limited(host: str) -> float | None:
    """The gateway's count of rate-limited requests (its ``/metrics``), if it can be read."""
    try:
        with urllib.request.urlopen(f"{host}/metrics", timeout=5) as resp:  # noqa: S310  # nosec B310
            text = resp.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    pattern = r'^gateway_ratelimit_decisions_total\{[^}]*result="limited"[^}]*\} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))


def record(args: argparse.Namespace, target: Target) -> int:
    """Load the system with Locust, sample ``target`` with py-spy, print the table."""
    py_spy, locust = _tool("py-spy"), _tool("locust")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    base = out / f"profile-{target.service}-{stamp}"
    svg, raw, log = base.with_suffix(".svg"), base.with_suffix(".txt"), Path(f"{base}-locust.log")
    refusal = _can_attach(py_spy, target.pid)
    if refusal is not None:
        print(f"py-spy cannot attach to pid {target.pid}: {refusal}", file=sys.stderr)
        print(_pyinstrument_hint(args, target, base.with_suffix(".html")), file=sys.stderr)
        return 3
    ramp = args.users / args.spawn_rate + 2  # every user spawned and past its first page
    limited_before = _limited(args.host)
    print(
        f"profiling {target.service} (pid {target.pid}, port {target.port}) for "
        f"{args.duration:g} s under {args.users} Locust users, after a {ramp:.0f} s ramp-up"
    )
    if target.others:
        listed = ", ".join(f"pid {pid} port {port}" for pid, port in target.others)
        print(f"{len(target.others)} other replica(s) not profiled: {listed}")
    locust_cmd = [
        locust, "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--users", str(args.users), "--spawn-rate", f"{args.spawn_rate:g}",
        "--run-time", f"{int(ramp + args.duration + 1)}s", "--host", args.host,
        "--csv", f"{base}-load",
    ]  # fmt: skip
    record_cmd = [
        py_spy, "record", "--pid", str(target.pid), "--duration", f"{int(args.duration)}",
        "--rate", str(args.rate), "--nonblocking",
    ]  # fmt: skip
    with log.open("w") as log_file:
        env = dict(os.environ)
        if args.think is not None:
            env["AIOSHOP_LOAD_THINK"] = f"{args.think:g}"
        load = subprocess.Popen(locust_cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        try:
            try:
                load.wait(timeout=ramp)
            except subprocess.TimeoutExpired:
                pass
            else:
                print(f"Locust ended before the recording (exit {load.returncode}): see {log}")
                return 1
            samplers = [
                subprocess.Popen(
                    [*record_cmd, "--format", fmt, "-o", str(path)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for fmt, path in (("flamegraph", svg), ("raw", raw))
            ]
            errors = [sampler.communicate(timeout=args.duration + 60)[1] for sampler in samplers]
            load_status = load.wait(timeout=ramp + args.duration + 60)
        finally:
            if load.poll() is None:
                load.terminate()
                load.wait(timeout=30)
    if any(sampler.returncode for sampler in samplers) or not raw.exists():
        print(f"py-spy failed: {' '.join(e.strip() for e in errors)}", file=sys.stderr)
        return 1
    print(f"\nflame graph: {svg}\nLocust summary: {log} (exit {load_status})")
    limited_after = _limited(args.host)
    if limited_before is not None and limited_after is not None and limited_after > limited_before:
        print(
            f"WARNING: the gateway refused {limited_after - limited_before:.0f} requests "
            "with 429: raise RATE_LIMIT_DEFAULT and RATE_LIMIT_AUTH (README, Benchmarks)"
        )
    print(f"\ntop {TOP} functions by own samples (py-spy, {args.rate}/s):")
    print(f"{'own %':>7}{'samples':>9}  function (file)")
    for name, samples, share in top_own(raw.read_text()):
        print(f"{share * 100:>6.1f}%{samples:>9}  {name}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Profile the service; 0 when recorded, 2 without a system, 3 when py-spy cannot attach."""
    args = parse_args(argv)
    try:
        port = args.port or service_port(args.service)
        if not _gateway_answers(args.host):
            raise NoSystem(f"no gateway answers {args.host}/healthz")
        target = find_target(args.service, port)
        return record(args, target)
    except NoSystem as exc:
        print(f"{exc}: {START_HINT}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

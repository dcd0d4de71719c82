#!/usr/bin/env bash
# deptry against the dependencies declared in setup.cfg. deptry reads pyproject.toml's [project]
# or requirements files, not setup.cfg, so this writes the two lists setuptools reads (the runtime
# ones and every extra) into requirements files and hands them to deptry. Everything else deptry
# decides (which modules are imported, which declared packages are unused) is its own.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" - "$tmp" <<'PY'
import configparser
import sys
from pathlib import Path

out = Path(sys.argv[1])
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")


def lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]


(out / "runtime.txt").write_text("\n".join(lines(cfg["options"]["install_requires"])) + "\n")
extras = [req for name, value in cfg["options.extras_require"].items() for req in lines(value)]
(out / "extras.txt").write_text("\n".join(extras) + "\n")
PY
exec "${DEPTRY:-.venv/bin/deptry}" . \
  --requirements-files "$tmp/runtime.txt" \
  --requirements-files-dev "$tmp/extras.txt" \
  "$@"

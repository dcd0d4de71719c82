"""The project's habits hold: pinned-from-above dependencies, the same checks in the git hooks
as in `make lint`, a valid dependabot configuration, a coverage floor."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _requirements() -> list[Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    values = [cfg["options"]["install_requires"], *cfg["options.extras_require"].values()]
    return [
        Requirement(line.strip())
        for value in values
        for line in value.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_every_dependency_has_a_compatible_range_with_an_upper_bound() -> None:
    requirements = _requirements()
    assert len(requirements) > 30
    unbounded = [
        str(req)
        for req in requirements
        if not any(spec.operator in {"<", "<=", "~=", "=="} for spec in req.specifier)
    ]
    assert unbounded == [], "a new major release could break CI overnight"
    floorless = [
        str(req)
        for req in requirements
        if not any(s.operator in {">=", "~=", "=="} for s in req.specifier)
    ]
    assert floorless == []


def test_the_git_hooks_run_the_checks_of_make_lint_and_typecheck() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    entries = [hook["entry"] for repo in config["repos"] for hook in repo["hooks"]]
    makefile = (ROOT / "Makefile").read_text()
    lint = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert lint is not None
    commands = [line.strip().replace("$(BIN)/", "") for line in lint.group(1).splitlines()]
    commands.append("mypy")
    for command in commands:
        tool = command.split()[0] if not command.startswith("bash ") else command
        assert any(tool in entry for entry in entries), f"no hook runs {command!r}"
    subprocess.run(  # noqa: S603 - our own tool, fixed arguments
        [BIN / "pre-commit", "validate-config", ".pre-commit-config.yaml"], cwd=ROOT, check=True
    )


def test_dependabot_configuration_is_valid_and_covers_each_ecosystem() -> None:
    path = ROOT / ".github" / "dependabot.yml"
    subprocess.run(  # noqa: S603 - our own tool, fixed arguments
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.dependabot", str(path)],
        check=True,
        capture_output=True,
    )
    ecosystems = {
        update["package-ecosystem"] for update in yaml.safe_load(path.read_text())["updates"]
    }
    assert ecosystems == {"pip", "docker", "github-actions"}


def test_ci_holds_a_coverage_floor() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["coverage"]["report"]["fail_under"] >= 50
    assert "coverage run -m pytest" in (ROOT / "Makefile").read_text()

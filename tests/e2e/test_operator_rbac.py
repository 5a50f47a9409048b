"""The operator works with exactly the RBAC its README lists, and no more.

The operator runs as a ServiceAccount bound to a Role (in the watched
namespace) and a ClusterRole (Kopf's CRD discovery) holding the README's rules;
with that token it must reconcile, scale through ``deployments/scale``, report
status and finalize. The chart's RBAC is built from the same list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.e2e import operator_env
from tests.e2e.operator_env import Operator, agent_manifest, apply, condition, get, secret, wait_for
from tests.support.kube import KubeCluster
from tests.support.sim import SimHandle

pytestmark = pytest.mark.e2e

crd = operator_env.crd
op_sim = operator_env.op_sim

#: The README's table, namespaced part.
NAMESPACED_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["steadfast.dev"],
        "resources": ["researchagents"],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {
        "apiGroups": ["steadfast.dev"],
        "resources": ["researchagents/status"],
        "verbs": ["get", "patch"],
    },
    {
        "apiGroups": ["steadfast.dev"],
        "resources": ["researchagents/finalizers"],
        "verbs": ["update"],
    },
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "list", "watch", "create", "update"],
    },
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},
    {
        "apiGroups": [""],
        "resources": ["configmaps", "services"],
        "verbs": ["get", "create", "update"],
    },
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    {
        "apiGroups": ["policy"],
        "resources": ["poddisruptionbudgets"],
        "verbs": ["get", "create", "update", "delete"],
    },
    {
        "apiGroups": ["keda.sh"],
        "resources": ["scaledobjects"],
        "verbs": ["get", "create", "update", "delete"],
    },
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
]
CLUSTER_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
    # Kopf lists and watches namespaces even when given explicit names.
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]


def rbac_objects(namespace: str) -> list[dict[str, Any]]:
    sa = {"kind": "ServiceAccount", "name": "steadfast-operator", "namespace": namespace}
    cluster_name = f"steadfast-operator-{namespace}"
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": sa["name"], "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "steadfast-operator", "namespace": namespace},
            "rules": NAMESPACED_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "steadfast-operator", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "steadfast-operator",
            },
            "subjects": [sa],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": cluster_name},
            "rules": CLUSTER_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": cluster_name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_name,
            },
            "subjects": [sa],
        },
    ]


def test_operator_runs_on_the_listed_rbac_only(
    crd: None,
    kube_cluster: KubeCluster,
    namespace: str,
    op_sim: SimHandle,
    temporal_address: str,
    tmp_path: Path,
) -> None:
    apply(kube_cluster, *rbac_objects(namespace))
    token = kube_cluster.kubectl(
        "create", "token", "steadfast-operator", "-n", namespace, "--duration=1h"
    ).stdout.strip()
    kubeconfig = kube_cluster.token_kubeconfig(token, tmp_path / "operator.kubeconfig")

    # Nothing beyond the list: the ServiceAccount cannot read Pods or other namespaces.
    who = f"system:serviceaccount:{namespace}:steadfast-operator"
    for args in (("get", "pods", "-n", namespace), ("list", "secrets", "-n", "default")):
        answer = kube_cluster.kubectl("auth", "can-i", *args, "--as", who, check=False)
        assert answer.stdout.strip() == "no", args

    op = Operator(kube_cluster, namespace, temporal_address, tmp_path / "operator.log")
    op.kubeconfig = kubeconfig
    op.start()
    try:
        secret(kube_cluster, namespace, "llm", {"api-key": "sk-sim"})
        workers = {"minReplicas": 0, "maxReplicas": 3, "targetBacklogPerWorker": 1}
        apply(
            kube_cluster, agent_manifest("least", namespace, op_sim, ["r1", "r2"], workers=workers)
        )

        def scaled() -> dict[str, Any] | None:
            ra = get(kube_cluster, "ra", namespace, "least")
            dep = get(kube_cluster, "deploy", namespace, "least-worker")
            replicas = ((dep or {}).get("spec") or {}).get("replicas") or 0
            ok = condition(ra, "Ready").get("status") == "True" and replicas == 2
            return ra if ok else None

        wait_for("Ready and scaled to 2 with least privilege", scaled, timeout=60)
        kube_cluster.kubectl("delete", "ra", "least", "-n", namespace, "--timeout=60s")
        log = op.log.read_text()
        assert "Forbidden" not in log, log[-3000:]
        assert " 403" not in log, log[-3000:]
    finally:
        op.stop()
        kube_cluster.kubectl(
            "delete",
            "clusterrole,clusterrolebinding",
            f"steadfast-operator-{namespace}",
            check=False,
        )


def test_readme_lists_the_same_rules() -> None:
    readme = (Path(__file__).parents[2] / "operator" / "README.md").read_text()
    table = readme.split("## RBAC the operator needs", 1)[1]
    for rule in NAMESPACED_RULES + CLUSTER_RULES:
        for resource in rule["resources"]:
            row = next((line for line in table.splitlines() if f"`{resource}`" in line), "")
            assert row, resource
            assert ", ".join(rule["verbs"]) in row, (resource, row)

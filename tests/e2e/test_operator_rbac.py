"""The operator works with exactly the RBAC its README lists, and no more.

The operator runs as the chart's ServiceAccount, bound by the chart's Role (in
the watched namespace) and ClusterRole (Kopf's CRD and namespace discovery),
rendered by ``helm template``; the test first checks those rules are exactly the
README's list. With that token the operator must reconcile, scale through
``deployments/scale``, report status and finalize.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.operator_env import (
    Operator,
    agent_manifest,
    apply,
    condition,
    get,
    secret,
    store_secret,
    wait_for,
)
from tests.support.kube import KubeCluster
from tests.support.sim import SimHandle

pytestmark = pytest.mark.e2e


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
        "resources": ["scaledobjects", "triggerauthentications"],
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


CHART = Path(__file__).parents[2] / "charts" / "steadfast"


def chart_rbac(kube_cluster: KubeCluster, namespace: str) -> list[dict[str, Any]]:
    """The chart's ServiceAccount and RBAC for a release watching only ``namespace``."""
    out = kube_cluster.helm(
        "template",
        f"rbac-{namespace}",
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "watch.scope=namespaces",
        "--set",
        f"watch.namespaces={{{namespace}}}",
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def rule_set(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_operator_runs_on_the_listed_rbac_only(
    crd: None,
    kube_cluster: KubeCluster,
    namespace: str,
    op_sim: SimHandle,
    temporal_address: str,
    tmp_path: Path,
) -> None:
    # The operator runs on exactly what the chart grants, which is the README's list.
    objects = chart_rbac(kube_cluster, namespace)
    by_kind = {doc["kind"]: doc for doc in objects}
    assert rule_set(by_kind["Role"]["rules"]) == rule_set(NAMESPACED_RULES)
    assert rule_set(by_kind["ClusterRole"]["rules"]) == rule_set(CLUSTER_RULES)
    account = by_kind["ServiceAccount"]["metadata"]["name"]
    cluster_name = by_kind["ClusterRole"]["metadata"]["name"]
    apply(kube_cluster, *objects)
    token = kube_cluster.kubectl(
        "create", "token", account, "-n", namespace, "--duration=1h"
    ).stdout.strip()
    kubeconfig = kube_cluster.token_kubeconfig(token, tmp_path / "operator.kubeconfig")

    # Nothing beyond the list: the ServiceAccount cannot read Pods or other namespaces.
    who = f"system:serviceaccount:{namespace}:{account}"
    for args in (("get", "pods", "-n", namespace), ("list", "secrets", "-n", "default")):
        answer = kube_cluster.kubectl("auth", "can-i", *args, "--as", who, check=False)
        assert answer.stdout.strip() == "no", args

    op = Operator(kube_cluster, namespace, temporal_address, tmp_path / "operator.log")
    op.kubeconfig = kubeconfig
    op.start()
    try:
        secret(kube_cluster, namespace, "llm", {"api-key": "sk-sim"})
        store_secret(kube_cluster, namespace)
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
            cluster_name,
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

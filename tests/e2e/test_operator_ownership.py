"""The operator never modifies an object it does not own (docs/design.md §3), on a real cluster.

A Deployment named ``x-worker`` made by someone else before agent ``x`` exists
holds the name the agent's worker Deployment would take. The operator must leave
it exactly as it is (same spec and generation, no owner reference, no write by
the operator's client), say so in the agent's ``Ready`` condition, and the garbage
collector must leave it when the agent is deleted.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.e2e import operator_env as env
from tests.support.kube import KubeCluster
from tests.support.sim import SimHandle

pytestmark = [pytest.mark.e2e, pytest.mark.hostile]


def stranger_deployment(namespace: str) -> dict[str, Any]:
    labels = {"app": "not-steadfast"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x-worker", "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/stranger:1"}]},
            },
        },
    }


def settled(cluster: KubeCluster, namespace: str) -> dict[str, Any]:
    """The stranger once its own controllers stopped writing to it (status included)."""
    last: dict[str, Any] = {}
    since = time.monotonic()

    def quiet() -> dict[str, Any] | None:
        nonlocal last, since
        now = env.get(cluster, "deploy", namespace, "x-worker") or {}
        version = now.get("metadata", {}).get("resourceVersion")
        if version != last.get("metadata", {}).get("resourceVersion"):
            last, since = now, time.monotonic()
            return None
        return now if time.monotonic() - since >= 3 else None

    return env.wait_for("the stranger Deployment to settle", quiet, timeout=60)


def writers(obj: dict[str, Any]) -> set[str]:
    """The field managers that have written to ``obj``."""
    return {m["manager"] for m in obj["metadata"].get("managedFields", [])}


def untouched(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Nobody but its own controllers wrote to the stranger after ``before``.

    The Deployment controller may still update its status (a late pod-ready under
    load changes ``resourceVersion``), so the checks are what the operator could
    change: spec (``generation``), labels, annotations, owners, and who wrote it.
    """
    meta_b, meta_a = before["metadata"], after["metadata"]
    assert meta_a["generation"] == meta_b["generation"], (meta_b, meta_a)
    assert after["spec"] == before["spec"]
    for key in ("labels", "annotations", "ownerReferences"):
        assert meta_a.get(key) == meta_b.get(key), key
    assert "ownerReferences" not in meta_a
    assert writers(after) <= writers(before) | {"kube-controller-manager"}, writers(after)


def test_an_unowned_worker_deployment_is_left_alone(
    operator: env.Operator, kube_cluster: KubeCluster, namespace: str, op_sim: SimHandle
) -> None:
    env.secret(kube_cluster, namespace, "llm", {"api-key": "sk-sim"})
    env.apply(kube_cluster, stranger_deployment(namespace))
    before = settled(kube_cluster, namespace)

    env.apply(kube_cluster, env.agent_manifest("x", namespace, op_sim, ["a topic"]))
    ready = env.wait_for(
        "Ready=False/ChildConflict on x",
        lambda: (
            c
            if (c := env.condition(env.get(kube_cluster, "ra", namespace, "x"), "Ready")).get(
                "reason"
            )
            == "ChildConflict"
            else None
        ),
    )
    assert ready["status"] == "False"
    assert f"Deployment {namespace}/x-worker" in ready["message"], ready
    assert "not owned by this ResearchAgent" in ready["message"], ready
    time.sleep(5)  # several status ticks (--status-interval 1) and a reconcile retry's worth

    after = env.get(kube_cluster, "deploy", namespace, "x-worker")
    assert after is not None
    untouched(before, after)
    # Nothing half-made next to it.
    assert env.get(kube_cluster, "cm", namespace, "x-worker-config") is None
    assert env.get(kube_cluster, "svc", namespace, "x-worker") is None

    # Deleting the agent leaves the stranger: prove the garbage collector acted on the
    # deletion with a marker that x does own, and look at the stranger once it is gone.
    agent = env.get(kube_cluster, "ra", namespace, "x")
    assert agent is not None
    owner = {
        "apiVersion": "steadfast.dev/v1alpha1",
        "kind": "ResearchAgent",
        "name": "x",
        "uid": agent["metadata"]["uid"],
    }
    marker = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x-marker", "namespace": namespace, "ownerReferences": [owner]},
    }
    env.apply(kube_cluster, marker)
    kube_cluster.kubectl("delete", "ra", "x", "-n", namespace, "--timeout=60s")
    env.wait_for(
        "the garbage collector to remove x's marker",
        lambda: env.get(kube_cluster, "cm", namespace, "x-marker") is None,
    )
    left = env.get(kube_cluster, "deploy", namespace, "x-worker")
    assert left is not None, "deleting the agent took the stranger with it"
    untouched(before, left)

"""The chart installed on the real node, shared by the real-pod tier's tests.

One `helm install` per session (the ``stack`` fixture): the chart's operator runs as a pod
from the image hack/build-images built, under the restricted Pod Security standard, and
finds the apiserver, Temporal, the simulator and Postgres at the node address, where the
tier's forwarders listen (hack/README.md). A ResearchAgent that waits before the operator
exists times the operator's first reconcile. The helpers build agents pointed at those
addresses and read pods, runs and reports.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import yaml

from tests.support.kube import REPO, KubeCluster
from tests.support.node import RealNode
from tests.support.sim import SimHandle, running_sim
from tests.support.waiting import wait_for

CHART = REPO / "charts" / "steadfast"
SYSTEM = "steadfast-system"
ENFORCE = "pod-security.kubernetes.io/enforce"
CRD = REPO / "crds" / "researchagents.steadfast.dev.yaml"
CANARY = "canary"


@dataclass(frozen=True)
class Stack:
    """What the agents of this module use, as pods see it (all on the node address)."""

    cluster: KubeCluster
    sim: SimHandle
    sim_url: str
    postgres_dsn: str
    """For the test process (loopback)."""
    pod_postgres_dsn: str
    """For the pods (the node address)."""


def _repo_tag(ref: str) -> tuple[str, str]:
    repository, _, tag = ref.rpartition(":")
    return repository, tag


def pod_time(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    dsn = os.environ.get("STEADFAST_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.fail("STEADFAST_TEST_POSTGRES_DSN is not set (make pods starts Postgres)")
    return dsn


@pytest.fixture(scope="session")
def stack(
    kube_cluster: KubeCluster,
    real_node: RealNode,
    images: dict[str, dict[str, Any]],
    temporal_address: str,
    postgres_dsn: str,
    on_node: Callable[[str], str],
) -> Iterator[Stack]:
    cluster = kube_cluster
    with running_sim() as sim:
        sim_url = "http://" + on_node(sim.base_url.removeprefix("http://"))
        pg = postgres_dsn.split("@", 1)
        pg_host = pg[1].split("/", 1)[0]
        pod_dsn = f"{pg[0]}@{on_node(pg_host)}/{pg[1].split('/', 1)[1]}"
        apiserver = on_node(f"127.0.0.1:{cluster.ports['apiserver']}")
        temporal = on_node(temporal_address)

        # An agent waiting before the operator exists: its first reconcile is timed
        # from the operator container's start.
        cluster.kubectl("apply", "-f", str(CRD))
        wait_for(
            "the ResearchAgent CRD Established",
            lambda: cluster.kubectl(
                "wait", "--for=condition=Established", "crd/researchagents.steadfast.dev",
                "--timeout=5s", check=False,
            ).returncode == 0,
        )  # fmt: skip
        cluster.kubectl("create", "namespace", CANARY)
        canary = agent(sim_url, CANARY, "canary", ["canary"], 1)
        canary["spec"]["workers"].update({"autoscaler": "none", "minReplicas": 0})
        docs = [*secrets(CANARY, pod_dsn), canary]
        wait_for(
            "the ResearchAgent API",
            lambda: cluster.kubectl(
                "apply", "-f", "-", input=yaml.safe_dump_all(docs), check=False
            ).returncode == 0,
        )  # fmt: skip
        cluster.kubectl("create", "namespace", SYSTEM)
        cluster.kubectl("label", "namespace", SYSTEM, f"{ENFORCE}=restricted")
        operator_repo, operator_tag = _repo_tag(images["operator"]["ref"])
        worker_repo, worker_tag = _repo_tag(images["worker"]["ref"])
        host, port = apiserver.rsplit(":", 1)
        values = {
            "operator": {
                "image": {"repository": operator_repo, "tag": operator_tag, "pullPolicy": "Never"},
                # No kube-proxy on this node: the operator finds the apiserver at the node
                # address, where a forwarder listens, instead of the Service IP.
                "extraEnv": [
                    {"name": "KUBERNETES_SERVICE_HOST", "value": host},
                    {"name": "KUBERNETES_SERVICE_PORT", "value": port},
                ],
            },
            "workers": {"image": {"repository": worker_repo, "tag": worker_tag}},
            "temporal": {"address": temporal},
            "dashboards": {"enabled": False},
        }
        cluster.helm(
            "install", "steadfast", str(CHART), "--namespace", SYSTEM, "--values", "-",
            input=yaml.safe_dump(values),
        )  # fmt: skip
        try:
            pod = wait_for("the operator pod to be Ready", lambda: ready_pod(cluster), 180)
            started = pod_time(
                pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
            )
            ready = pod_time(condition(pod, "Ready")["lastTransitionTime"])
            dep = wait_for(
                "the canary's Deployment",
                lambda: cluster.kubectl(
                    "get", "deploy", "canary-worker", "-n", CANARY, "-o", "json", check=False
                ).stdout,
                timeout=120,
            )  # fmt: skip
            reconciled = pod_time(json.loads(dep)["metadata"]["creationTimestamp"])
            print(
                f"\nfigures: operator container start -> Ready {ready - started:.0f}s,"
                f" -> first reconcile (a waiting agent's Deployment) {reconciled - started:.0f}s"
            )
            yield Stack(cluster, sim, sim_url, postgres_dsn, pod_dsn)
        finally:
            logs = cluster.kubectl(
                "logs", "-n", SYSTEM, "deploy/steadfast-operator", "--tail=60", check=False
            ).stdout
            print(f"\noperator log (tail):\n{logs}")
            cluster.kubectl("delete", "ra", "--all", "-A", "--timeout=60s", check=False)
            cluster.helm("uninstall", "steadfast", "--namespace", SYSTEM, check=False)


def pods(cluster: KubeCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    got = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", selector)
    return list(got["items"])


def condition(pod: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in pod.get("status", {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def ready_pod(
    cluster: KubeCluster,
    namespace: str = SYSTEM,
    selector: str = "app.kubernetes.io/component=operator",
    exclude: frozenset[str] = frozenset(),
) -> dict[str, Any] | None:
    for pod in pods(cluster, namespace, selector):
        if pod["metadata"]["name"] in exclude or pod["metadata"].get("deletionTimestamp"):
            continue
        if condition(pod, "Ready").get("status") == "True":
            return pod
    return None


def agent(
    sim_url: str, namespace: str, name: str, topics: list[str], max_replicas: int
) -> dict[str, Any]:
    example = yaml.safe_load((REPO / "examples" / "market-watch.yaml").read_text())
    spec: dict[str, Any] = example["spec"]
    spec["temporal"] = {"address": "", "namespace": "default"}
    spec["model"] = {
        **spec["model"],
        "baseURL": sim_url,
        "apiKeySecretRef": {"name": "llm", "key": "api-key"},
    }
    spec["search"] = {"provider": "http", "endpoint": f"{sim_url}/search"}
    spec["storage"] = {"postgresSecretRef": {"name": "pg", "key": "dsn"}}
    spec["notify"] = {}
    spec.pop("schedule", None)
    spec["topics"] = topics
    spec["workers"] = {**spec.get("workers", {}), "minReplicas": 1, "maxReplicas": max_replicas}
    return {
        "apiVersion": "steadfast.dev/v1alpha1",
        "kind": "ResearchAgent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def secrets(namespace: str, pod_postgres_dsn: str) -> list[dict[str, Any]]:
    return [
        secret("llm", namespace, {"api-key": "sk-sim"}),
        secret("pg", namespace, {"dsn": pod_postgres_dsn}),
    ]


def apply_agent(stack: Stack, namespace: str, agent: dict[str, Any]) -> None:
    docs = [*secrets(namespace, stack.pod_postgres_dsn), agent]
    stack.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def runs_of(cluster: KubeCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    ra = cluster.kubectl_json("get", "ra", name, "-n", namespace)
    return list((ra.get("status") or {}).get("runs") or [])


def completed(cluster: KubeCluster, namespace: str, name: str, n: int) -> list[dict[str, Any]]:
    runs = runs_of(cluster, namespace, name)
    runs = [r for r in runs if r["phase"] == "Completed" and r.get("reportId")]
    return runs if len(runs) >= n else []


async def reports(dsn: str, workflow_ids: list[str]) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT workflow_id, report_id FROM steadfast_reports WHERE workflow_id = ANY($1)",
            workflow_ids,
        )
    finally:
        await conn.close()
    return {r["workflow_id"]: r["report_id"] for r in rows}

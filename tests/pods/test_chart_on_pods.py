"""The chart's operator and an agent's workers as real pods, from the images built here.

`helm install` of the chart with the images of hack/build-images: the operator pod comes
up Ready through its probes under the restricted Pod Security standard, with a read-only
root filesystem, and reconciles agents; the worker pods it renders read their mounted
configuration and their Secrets, run topics against Temporal and the simulator, save
reports in Postgres, and answer on /metrics at the pod's address. A worker pod
force-deleted in the middle of a report leaves the run to the pod that replaces it, with
no finished LLM call paid twice. The figures (pod start to polling, kill to resumed,
operator start to first reconcile) are printed for the note.

The scale-down drain on real pods (issue 11's fourth point) is not here: it depends on
the drain work of issue 9, item 5.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from steadfast_contract import ids
from tests.support.kube import REPO, KubeCluster
from tests.support.kube_pki import issue
from tests.support.node import NODE_IP, NODE_NAME, RealNode
from tests.support.sim import SimHandle, running_sim, wait_for_report_call
from tests.support.tlsproxy import TLSProxy, make_test_pki
from tests.support.waiting import wait_for

pytestmark = pytest.mark.pods

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


def _time(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


@pytest.fixture(scope="module")
def postgres_dsn() -> str:
    dsn = os.environ.get("STEADFAST_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.fail("STEADFAST_TEST_POSTGRES_DSN is not set (make pods starts Postgres)")
    return dsn


@pytest.fixture(scope="module")
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
        canary = _agent(sim_url, CANARY, "canary", ["canary"], 1)
        canary["spec"]["workers"].update({"autoscaler": "none", "minReplicas": 0})
        docs = [*_secrets(CANARY, pod_dsn), canary]
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
            pod = wait_for("the operator pod to be Ready", lambda: _ready_pod(cluster), 180)
            started = _time(pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"])
            ready = _time(_condition(pod, "Ready")["lastTransitionTime"])
            dep = wait_for(
                "the canary's Deployment",
                lambda: cluster.kubectl(
                    "get", "deploy", "canary-worker", "-n", CANARY, "-o", "json", check=False
                ).stdout,
                timeout=120,
            )  # fmt: skip
            reconciled = _time(json.loads(dep)["metadata"]["creationTimestamp"])
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


def _pods(cluster: KubeCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    got = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", selector)
    return list(got["items"])


def _condition(pod: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in pod.get("status", {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def _ready_pod(
    cluster: KubeCluster,
    namespace: str = SYSTEM,
    selector: str = "app.kubernetes.io/component=operator",
    exclude: frozenset[str] = frozenset(),
) -> dict[str, Any] | None:
    for pod in _pods(cluster, namespace, selector):
        if pod["metadata"]["name"] in exclude or pod["metadata"].get("deletionTimestamp"):
            continue
        if _condition(pod, "Ready").get("status") == "True":
            return pod
    return None


def _agent(
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


def _secrets(namespace: str, pod_postgres_dsn: str) -> list[dict[str, Any]]:
    return [
        _secret("llm", namespace, {"api-key": "sk-sim"}),
        _secret("pg", namespace, {"dsn": pod_postgres_dsn}),
    ]


def _apply_agent(stack: Stack, namespace: str, agent: dict[str, Any]) -> None:
    docs = [*_secrets(namespace, stack.pod_postgres_dsn), agent]
    stack.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def _runs(cluster: KubeCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    ra = cluster.kubectl_json("get", "ra", name, "-n", namespace)
    return list((ra.get("status") or {}).get("runs") or [])


def _completed(cluster: KubeCluster, namespace: str, name: str, n: int) -> list[dict[str, Any]]:
    runs = _runs(cluster, namespace, name)
    runs = [r for r in runs if r["phase"] == "Completed" and r.get("reportId")]
    return runs if len(runs) >= n else []


async def _reports(dsn: str, workflow_ids: list[str]) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT workflow_id, report_id FROM steadfast_reports WHERE workflow_id = ANY($1)",
            workflow_ids,
        )
    finally:
        await conn.close()
    return {r["workflow_id"]: r["report_id"] for r in rows}


async def test_operator_pod_reconciles_and_worker_pods_complete_runs(
    stack: Stack, namespace: str
) -> None:
    cluster = stack.cluster
    operator = _ready_pod(cluster)
    assert operator is not None
    assert operator["spec"]["nodeName"] == NODE_NAME
    container = operator["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["image"].startswith("localhost/steadfast/operator:")
    ns = cluster.kubectl_json("get", "namespace", SYSTEM)
    assert ns["metadata"]["labels"][ENFORCE] == "restricted"

    topics = ["Durable execution on real pods", "Kubelets built from modules"]
    applied = time.time()
    _apply_agent(stack, namespace, _agent(stack.sim_url, namespace, "pods-agent", topics, 1))
    worker = wait_for(
        "a Ready worker pod",
        lambda: _ready_pod(cluster, namespace, "app.kubernetes.io/name=steadfast-worker"),
        timeout=180,
    )
    created = _time(worker["metadata"]["creationTimestamp"])
    polling = _time(_condition(worker, "Ready")["lastTransitionTime"])
    runs = wait_for(
        "both runs Completed", lambda: _completed(cluster, namespace, "pods-agent", 2), 240
    )
    done = time.time()
    print(
        f"\nfigures: agent applied -> worker pod created {created - applied:.0f}s;"
        f" worker pod created -> Ready (polling) {polling - created:.0f}s;"
        f" agent applied -> 2 runs Completed {done - applied:.0f}s"
    )
    wf_ids = [ids.workflow_id(namespace, "pods-agent", t) for t in topics]
    assert sorted(r["workflowId"] for r in runs) == sorted(wf_ids)

    # The reports are in Postgres, written by the pod through the DSN of its Secret.
    saved = await _reports(stack.postgres_dsn, wf_ids)
    assert saved == {r["workflowId"]: r["reportId"] for r in runs}

    worker = cluster.kubectl_json("get", "pod", worker["metadata"]["name"], "-n", namespace)
    assert worker["spec"]["nodeName"] == NODE_NAME
    assert worker["status"]["containerStatuses"][0]["restartCount"] == 0
    logs = cluster.kubectl("logs", "-n", namespace, worker["metadata"]["name"]).stdout
    # The worker says where it polls, and its search requests name each topic.
    # (The task queue's "steadfast-" prefix shows as [redacted]: it shares 4-character
    # pieces with the test's Postgres password, and no piece of a credential is logged.)
    assert f"worker polling task queue [redacted]-{namespace}-pods-agent on {NODE_IP}:" in logs
    assert all(t.replace(" ", "+") in logs for t in topics), logs[-2000:]
    async with httpx.AsyncClient() as http:
        url = f"http://{worker['status']['podIP']}:9464/metrics"
        metrics = (await http.get(url, timeout=10)).text
    completed = [
        line for line in metrics.splitlines()
        if line.startswith("steadfast_runs_total{") and 'phase="Completed"' in line
    ]  # fmt: skip
    assert len(completed) == 1, metrics[-2000:]
    assert float(completed[0].rsplit(" ", 1)[1]) == 2.0


async def test_force_deleted_worker_pod_run_resumes_on_another_pod(
    stack: Stack, namespace: str, temporal_client: Client
) -> None:
    cluster, sim = stack.cluster, stack.sim
    sim.reset()
    # About eight seconds of streaming: the pod dies well inside the report.
    sim.set_faults({"llm": {"chunk_delay_ms": 100, "match": "research report"}})
    topic = "What a force-deleted pod leaves behind"
    _apply_agent(stack, namespace, _agent(stack.sim_url, namespace, "kill-agent", [topic], 1))
    wf_id = ids.workflow_id(namespace, "kill-agent", topic)
    await wait_for_report_call(sim, wf_id, settle=1.0)
    # The one worker pod runs the report (it polls before its readiness probe has passed).
    (first,) = [
        pod for pod in _pods(cluster, namespace, "app.kubernetes.io/name=steadfast-worker")
        if pod["status"].get("phase") == "Running"
    ]  # fmt: skip
    name = first["metadata"]["name"]
    cluster.kubectl("delete", "pod", name, "-n", namespace, "--grace-period=0", "--force")
    killed = time.monotonic()
    sim.set_faults({"llm": {"clear": True}})
    second = wait_for(
        "another Ready worker pod",
        lambda: _ready_pod(
            cluster, namespace, "app.kubernetes.io/name=steadfast-worker", frozenset({name})
        ),
        timeout=180,
    )
    replaced = time.monotonic()
    runs = wait_for(
        "the run Completed", lambda: _completed(cluster, namespace, "kill-agent", 1), 240
    )
    resumed = time.monotonic()
    print(
        f"\nfigures: pod force-deleted -> replacement Ready {replaced - killed:.0f}s;"
        f" -> run Completed {resumed - killed:.0f}s"
    )
    assert runs[0]["workflowId"] == wf_id

    # No finished LLM call was paid twice; the report's stream was asked for again once.
    served = {k: v for k, v in sim.served("llm").items() if k.startswith(wf_id)}
    attempts = {k: v for k, v in sim.attempts("llm").items() if k.startswith(wf_id)}
    assert served, sim.served("llm")
    assert set(served.values()) == {1}, served
    assert sorted(attempts.values()) == [1, 2], attempts

    # The first pod ran the queries, the replacement finished the report (a worker's
    # identity is pid@hostname, and a pod's hostname is its name).
    history = await temporal_client.get_workflow_handle(wf_id).fetch_history()
    identities = [
        e.activity_task_started_event_attributes.identity
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    second_name = second["metadata"]["name"]
    assert any(name in i for i in identities), identities
    assert any(second_name in i for i in identities), identities


async def test_worker_pods_read_the_mounted_tls_secret_and_api_key(
    stack: Stack,
    namespace: str,
    temporal_address: str,
    on_node: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """Secret volumes, not only secretKeyRef variables: a Temporal behind mTLS (and an API
    key) is reached by the operator pod and by a worker pod that reads the kubelet's mounts
    of the TLS Secret and the API-key Secret."""
    cluster = stack.cluster
    pki = make_test_pki(tmp_path / "pki")
    # The pods dial the proxy at the node address: its certificate must name it.
    issue(pki.dir, "server", "/CN=localhost", ("IP:127.0.0.1", f"IP:{NODE_IP}"))
    with TLSProxy(temporal_address, pki) as proxy:
        topic = "Secrets as files on a real kubelet"
        agent = _agent(stack.sim_url, namespace, "secure", [topic], 1)
        agent["spec"]["temporal"] = {
            "address": on_node(proxy.address),
            "tls": {"secretName": "temporal-mtls"},
            "apiKeySecretRef": {"name": "temporal-cloud", "key": "api-key"},
        }
        tls = {
            "tls.crt": pki.client_cert.read_text(),
            "tls.key": pki.client_key.read_text(),
            "ca.crt": pki.ca.read_text(),
        }
        docs = [
            _secret("temporal-mtls", namespace, tls),
            _secret("temporal-cloud", namespace, {"api-key": "tk-pods"}),
        ]
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        _apply_agent(stack, namespace, agent)
        runs = wait_for(
            "the run Completed", lambda: _completed(cluster, namespace, "secure", 1), 240
        )
        assert runs[0]["workflowId"] == ids.workflow_id(namespace, "secure", topic)
        pod = wait_for(
            "a Ready worker pod",
            lambda: _ready_pod(cluster, namespace, "app.kubernetes.io/name=steadfast-worker"),
            timeout=60,
        )
    # Every connection through the proxy presented the Secret's client certificate; the
    # worker's went through the kubelet's mount of it (no other copy exists in the pod).
    assert proxy.subjects
    assert set(proxy.subjects) == {pki.client_subject}
    assert proxy.rejected == 0, proxy.errors
    mounts = {m["name"]: m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert {"temporal-tls", "temporal-api-key"} <= set(mounts)

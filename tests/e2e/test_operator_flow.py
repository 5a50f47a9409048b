"""The operator on the real control plane and the real Temporal dev server.

Each test runs its own ``steadfast operator`` process, scoped to the test's
namespace, so request counts and kills concern that test alone. Workers are
``steadfast worker`` processes started by the test outside any pod (kwok pods
run nothing), configured from the ConfigMap the operator rendered plus the
environment the Deployment would give them; only host-local paths and ports
are changed. No test dials a pod or Service IP.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from tests.support.kube import REPO, KubeCluster
from tests.support.ports import free_port
from tests.support.sim import SimHandle, running_sim

from steadfast_worker import ids

pytestmark = pytest.mark.e2e

CRD = REPO / "crds" / "researchagents.steadfast.dev.yaml"
STEADFAST = str(Path(sys.executable).with_name("steadfast"))
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.3)


@pytest.fixture(scope="session")
def crd(kube_cluster: KubeCluster) -> None:
    kube_cluster.kubectl("apply", "-f", str(CRD))
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/researchagents.steadfast.dev", "--timeout=60s"
    )
    # Discovery lags the Established condition by a moment.
    wait_for(
        "the ResearchAgent API in discovery",
        lambda: kube_cluster.kubectl("get", "ra", "-A", check=False).returncode == 0,
    )


@pytest.fixture(scope="session")
def op_sim() -> Iterator[SimHandle]:
    """The LLM and search simulator the agents' workers talk to (no faults)."""
    with running_sim() as handle:
        yield handle


class Operator:
    """A ``steadfast operator`` subprocess for one namespace."""

    def __init__(self, cluster: KubeCluster, namespace: str, temporal: str, log: Path) -> None:
        self.cluster, self.namespace, self.temporal, self.log = cluster, namespace, temporal, log
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            STEADFAST,
            "operator",
            "--namespace",
            self.namespace,
            "--kubeconfig",
            str(self.cluster.kubeconfig),
            "--worker-image",
            "steadfast/worker:e2e",
            "--temporal-address",
            self.temporal,
            "--status-interval",
            "1",
            "--metrics-port",
            str(self.metrics_port),
            "--health-port",
            str(self.health_port),
            "--listen",
            "127.0.0.1",
            "--no-events",
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=self.cluster.env()
            )
        wait_for("the operator's health endpoint", self.healthy, timeout=30)

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"operator exited: {self.log.read_text()[-3000:]}")
        try:
            url = f"http://127.0.0.1:{self.health_port}/healthz"
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def requests(self) -> dict[str, float]:
        """The operator's own Kubernetes requests by verb, from its /metrics."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("steadfast_operator_kube_requests_total{"):
                verb = line.split('verb="')[1].split('"')[0]
                out[verb] = float(line.rsplit(" ", 1)[1])
        return out

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def operator(
    crd: None, kube_cluster: KubeCluster, namespace: str, temporal_address: str, tmp_path: Path
) -> Iterator[Operator]:
    op = Operator(kube_cluster, namespace, temporal_address, tmp_path / "operator.log")
    op.start()
    try:
        yield op
    finally:
        # While the operator still runs, so finalizers cancel runs and let agents go
        # (a namespace deleted with agents but no operator would never finish).
        if op.proc is not None and op.proc.poll() is None:
            kube_cluster.kubectl(
                "delete", "ra", "--all", "-n", namespace, "--timeout=60s", check=False
            )
        op.stop()


def agent_manifest(
    name: str, namespace: str, sim: SimHandle, topics: list[str], **spec: Any
) -> dict[str, Any]:
    """The example's spec, pointed at the test's simulator and operator defaults."""
    example = yaml.safe_load((REPO / "examples" / "market-watch.yaml").read_text())
    body: dict[str, Any] = example["spec"]
    body["temporal"] = {"address": "", "namespace": "default"}
    body["model"] = {**body["model"], "baseURL": sim.llm_base_url}
    body["model"]["apiKeySecretRef"] = {"name": "llm", "key": "api-key"}
    body["search"] = {"provider": "http", "endpoint": sim.search_url}
    body["storage"] = {}
    body["topics"] = topics
    for key, value in spec.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return {
        "apiVersion": "steadfast.dev/v1alpha1",
        "kind": "ResearchAgent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def apply(cluster: KubeCluster, *docs: dict[str, Any], check: bool = True) -> str:
    proc = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), check=False)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc.stdout + proc.stderr


def secret(cluster: KubeCluster, namespace: str, name: str, data: dict[str, str]) -> None:
    apply(
        cluster,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )


def get(cluster: KubeCluster, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def condition(agent: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((agent or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


@contextmanager
def worker_process(
    cluster: KubeCluster, namespace: str, agent: str, tmp_path: Path, sim: SimHandle
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker configured from the rendered ConfigMap and the Deployment's env names."""
    cm = wait_for(
        "the worker ConfigMap", lambda: get(cluster, "cm", namespace, f"{agent}-worker-config")
    )
    config = yaml.safe_load(cm["data"]["worker.yaml"])
    # Host-local paths and ports only; everything else is what a pod would read.
    config["storage"]["sqlitePath"] = str(tmp_path / f"{agent}-reports.db")
    config["worker"]["metricsPort"] = 0
    config["worker"]["sdkMetricsPort"] = 0
    config["worker"]["gracefulShutdown"] = "2s"
    path = tmp_path / f"{agent}-worker.yaml"
    path.write_text(yaml.safe_dump(config))
    dep = get(cluster, "deploy", namespace, f"{agent}-worker")
    assert dep is not None
    env = dict(os.environ)
    for var in dep["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            sec = get(cluster, "secret", namespace, ref["name"])
            assert sec is not None
            env[var["name"]] = base64.b64decode(sec["data"][ref["key"]]).decode()
    log = (tmp_path / f"{agent}-worker.log").open("ab")
    proc = subprocess.Popen(
        [STEADFAST, "worker", "--config", str(path)], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_example_becomes_children_and_finished_runs(
    operator: Operator, kube_cluster: KubeCluster, namespace: str, op_sim: SimHandle, tmp_path: Path
) -> None:
    secret(kube_cluster, namespace, "llm", {"api-key": "sk-sim"})
    topics = ["2026 AI agent market trends", "Durable execution engines compared"]
    apply(kube_cluster, agent_manifest("market-watch", namespace, op_sim, topics))

    dep = wait_for(
        "the Deployment", lambda: get(kube_cluster, "deploy", namespace, "market-watch-worker")
    )
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "steadfast/worker:e2e"
    assert container["args"] == ["worker", "--config", "/etc/steadfast/worker.yaml"]
    env = {e["name"]: e for e in container["env"]}
    assert env["ANTHROPIC_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "llm",
        "key": "api-key",
    }
    assert "sk-sim" not in json.dumps(dep)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "ResearchAgent"
    svc = get(kube_cluster, "svc", namespace, "market-watch-worker")
    assert svc is not None
    assert [p["port"] for p in svc["spec"]["ports"]] == [9464, 9465]

    with worker_process(kube_cluster, namespace, "market-watch", tmp_path, op_sim):

        def finished() -> dict[str, Any] | None:
            ra = get(kube_cluster, "ra", namespace, "market-watch")
            runs = ((ra or {}).get("status") or {}).get("runs") or []
            done = [r for r in runs if r["phase"] == "Completed" and r.get("reportId")]
            return ra if len(done) == len(topics) else None

        ra = wait_for("both runs Completed in status", finished, timeout=120)
    for run in ra["status"]["runs"]:
        assert run["costUSD"] > 0
        assert run["llmCalls"] >= 2
        assert run["workflowId"] == ids.workflow_id(namespace, "market-watch", run["topic"])
    assert ra["status"]["cost"]["totalUSD"] > 0
    assert condition(ra, "Ready")["status"] == "True"
    table = kube_cluster.kubectl("get", "ra", "-n", namespace).stdout
    header = table.splitlines()[0].split()
    assert header[:4] == ["NAME", "READY", "WORKERS", "BACKLOG"]
    assert "COST" in header
    assert "AGE" in header
    assert "2/2" in table.splitlines()[1]


def test_spec_edit_rolls_and_resync_writes_nothing(
    operator: Operator, kube_cluster: KubeCluster, namespace: str, op_sim: SimHandle
) -> None:
    secret(kube_cluster, namespace, "llm", {"api-key": "sk-sim"})
    manifest = agent_manifest(
        "roll", namespace, op_sim, ["t1"], workers={"autoscaler": "none", "minReplicas": 1}
    )
    apply(kube_cluster, manifest)

    def template_hash() -> str | None:
        dep = get(kube_cluster, "deploy", namespace, "roll-worker")
        tmpl = (dep or {}).get("spec", {}).get("template", {}).get("metadata", {})
        return (tmpl.get("annotations") or {}).get("steadfast.dev/config-hash")

    first = wait_for("the Deployment", template_hash)
    manifest["spec"]["model"]["maxTokens"] = 1500
    apply(kube_cluster, manifest)
    second = wait_for("a new config hash", lambda: (h := template_hash()) != first and h)
    assert second != first
    cm = get(kube_cluster, "cm", namespace, "roll-worker-config")
    assert cm is not None
    assert yaml.safe_load(cm["data"]["worker.yaml"])["model"]["maxTokens"] == 1500

    def versions() -> dict[str, str]:
        out = {}
        for kind, name in (
            ("deploy", "roll-worker"),
            ("cm", "roll-worker-config"),
            ("svc", "roll-worker"),
        ):
            obj = get(kube_cluster, kind, namespace, name)
            assert obj is not None
            out[kind] = obj["metadata"]["resourceVersion"]
        return out

    before = versions()
    # A restart replays every agent through the resume handler: a full resync.
    operator.stop()
    operator.start()
    wait_for(
        "the resync's status refresh",
        lambda: operator.requests().get("GET", 0) >= 8,
        timeout=30,
    )
    time.sleep(3)
    writes = {v: n for v, n in operator.requests().items() if v != "GET"}
    assert writes == {}, f"an unchanged resync wrote: {writes}"
    assert versions() == before


async def test_autoscale_up_from_zero_and_back(
    operator: Operator,
    kube_cluster: KubeCluster,
    namespace: str,
    op_sim: SimHandle,
    temporal_client: Client,
    tmp_path: Path,
) -> None:
    secret(kube_cluster, namespace, "llm", {"api-key": "sk-sim"})
    topics = [f"scaling topic {i}" for i in range(5)]
    workers = {
        "minReplicas": 0,
        "maxReplicas": 5,
        "targetBacklogPerWorker": 2,
        "scaleDownDelay": "3s",
    }
    apply(kube_cluster, agent_manifest("scaler", namespace, op_sim, topics, workers=workers))

    def replicas() -> int:
        dep = get(kube_cluster, "deploy", namespace, "scaler-worker")
        return int(((dep or {}).get("spec") or {}).get("replicas") or 0)

    # Five workflow tasks and no poller: ceil(5 / 2) = 3 workers, from zero.
    started = time.monotonic()
    wait_for("3 replicas", lambda: replicas() == 3, timeout=60)
    reaction = time.monotonic() - started
    with worker_process(kube_cluster, namespace, "scaler", tmp_path, op_sim):

        def all_done() -> bool:
            ra = get(kube_cluster, "ra", namespace, "scaler")
            runs = ((ra or {}).get("status") or {}).get("runs") or []
            return len(runs) == 5 and all(r["phase"] == "Completed" for r in runs)

        wait_for("all five runs Completed", all_done, timeout=180)
        wait_for("replicas back to zero", lambda: replicas() == 0, timeout=60)
    print(f"scale-from-zero reaction {reaction:.1f}s")


async def test_delete_cancels_runs_and_children_are_collected(
    operator: Operator,
    kube_cluster: KubeCluster,
    namespace: str,
    op_sim: SimHandle,
    temporal_client: Client,
) -> None:
    secret(kube_cluster, namespace, "llm", {"api-key": "sk-sim"})
    topics = ["to cancel one", "to cancel two"]
    apply(kube_cluster, agent_manifest("doomed", namespace, op_sim, topics))
    wait_for(
        "two running runs in status",
        lambda: (
            len(
                ((get(kube_cluster, "ra", namespace, "doomed") or {}).get("status") or {}).get(
                    "runs"
                )
                or []
            )
            == 2
        ),
    )
    kube_cluster.kubectl("delete", "ra", "doomed", "-n", namespace, "--timeout=60s")
    for topic in topics:
        handle = temporal_client.get_workflow_handle(ids.workflow_id(namespace, "doomed", topic))
        events = [e.event_type async for e in handle.fetch_history_events()]
        assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED in events
    for kind, name in (
        ("deploy", "doomed-worker"),
        ("cm", "doomed-worker-config"),
        ("svc", "doomed-worker"),
    ):
        wait_for(
            f"{kind}/{name} collected",
            lambda k=kind, n=name: get(kube_cluster, k, namespace, n) is None,
        )


async def test_killed_mid_reconcile_converges_without_duplicates(
    operator: Operator,
    kube_cluster: KubeCluster,
    namespace: str,
    op_sim: SimHandle,
    temporal_client: Client,
) -> None:
    secret(kube_cluster, namespace, "llm", {"api-key": "sk-sim"})
    topics = [f"crash topic {i}" for i in range(12)]
    apply(kube_cluster, agent_manifest("crashy", namespace, op_sim, topics))
    # Kill as soon as the first child exists: the reconcile is between its writes.
    wait_for("the first child", lambda: get(kube_cluster, "cm", namespace, "crashy-worker-config"))
    operator.kill()
    operator.start()

    def converged() -> bool:
        ra = get(kube_cluster, "ra", namespace, "crashy")
        runs = ((ra or {}).get("status") or {}).get("runs") or []
        return len(runs) == len(topics) and condition(ra, "Ready").get("status") == "True"

    wait_for("all topics started after the restart", converged, timeout=90)
    for topic in topics:
        wf_id = ids.workflow_id(namespace, "crashy", topic)
        executions = [w async for w in temporal_client.list_workflows(f"WorkflowId = '{wf_id}'")]
        assert len(executions) == 1, f"{topic}: {len(executions)} executions"
        assert executions[0].status == WorkflowExecutionStatus.RUNNING
    for kind in ("deploy", "cm", "svc"):
        items = kube_cluster.kubectl_json(
            "get", kind, "-n", namespace, "-l", "steadfast.dev/agent=crashy"
        )
        assert len(items["items"]) == 1, kind

"""The operator on the real control plane and the real Temporal dev server.

Children, finished runs in status, rolling on edits, no writes on resync,
autoscaling from zero and back, deletion, and a kill mid-reconcile. The
operator and workers are real processes (see :mod:`tests.e2e.operator_env`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from tests.e2e.operator_env import (
    Operator,
    Scene,
    agent_manifest,
    apply,
    condition,
    get,
    secret,
    wait_for,
    worker_process,
)
from tests.support.kube import KubeCluster
from tests.support.sim import SimHandle

from steadfast_contract import ids

pytestmark = pytest.mark.e2e


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
    manifest["spec"]["model"]["name"] = "claude-haiku-4-5"
    apply(kube_cluster, manifest)
    second = wait_for("a new config hash", lambda: (h := template_hash()) != first and h)
    assert second != first
    cm = get(kube_cluster, "cm", namespace, "roll-worker-config")
    assert cm is not None
    assert yaml.safe_load(cm["data"]["worker.yaml"])["model"]["name"] == "claude-haiku-4-5"

    def versions() -> dict[str, str]:
        out = {}
        for kind, name in (
            ("deploy", "roll-worker"),
            ("cm", "roll-worker-config"),
            ("svc", "roll-worker"),
        ):
            obj = get(kube_cluster, kind, namespace, name)
            assert obj is not None
            # The Deployment's status keeps moving (its controller writes it); its
            # generation moves only when its spec is written.
            meta = obj["metadata"]
            out[kind] = str(meta["generation"] if kind == "deploy" else meta["resourceVersion"])
        return out

    kube_cluster.kubectl(
        "rollout", "status", "deploy/roll-worker", "-n", namespace, "--timeout=60s"
    )
    before = versions()
    # A restart replays every agent through the resume handler: a full resync.
    operator.stop()
    operator.start()
    wait_for(
        "the resync's status refresh",
        lambda: operator.requests().get("GET", 0) >= 5,
        timeout=30,
    )
    time.sleep(3)
    writes = {v: n for v, n in operator.requests().items() if v != "GET"}
    assert writes == {}, f"an unchanged resync wrote: {writes}\n{operator.log.read_text()[-4000:]}"
    assert versions() == before


async def test_autoscale_up_from_zero_and_back(
    scene: Scene, temporal_client: Client, tmp_path: Path
) -> None:
    topics = [f"scaling topic {i}" for i in range(5)]
    workers = {
        "minReplicas": 0,
        "maxReplicas": 5,
        "targetBacklogPerWorker": 2,
        "scaleDownDelay": "3s",
    }
    apply(
        scene.cluster, agent_manifest("scaler", scene.namespace, scene.sim, topics, workers=workers)
    )

    def replicas() -> int:
        dep = get(scene.cluster, "deploy", scene.namespace, "scaler-worker")
        return int(((dep or {}).get("spec") or {}).get("replicas") or 0)

    # Five workflow tasks and no poller: ceil(5 / 2) = 3 workers, from zero.
    started = time.monotonic()
    wait_for("3 replicas", lambda: replicas() == 3, timeout=60)
    reaction = time.monotonic() - started
    with worker_process(scene.cluster, scene.namespace, "scaler", tmp_path, scene.sim):

        def all_done() -> bool:
            ra = get(scene.cluster, "ra", scene.namespace, "scaler")
            runs = ((ra or {}).get("status") or {}).get("runs") or []
            return len(runs) == 5 and all(r["phase"] == "Completed" for r in runs)

        wait_for("all five runs Completed", all_done, timeout=180)
        wait_for("replicas back to zero", lambda: replicas() == 0, timeout=60)
    print(f"scale-from-zero reaction {reaction:.1f}s")


async def test_delete_cancels_runs_and_children_are_collected(
    scene: Scene, temporal_client: Client
) -> None:
    topics = ["to cancel one", "to cancel two"]
    apply(scene.cluster, agent_manifest("doomed", scene.namespace, scene.sim, topics))
    wait_for(
        "two running runs in status",
        lambda: (
            len(
                (
                    (get(scene.cluster, "ra", scene.namespace, "doomed") or {}).get("status") or {}
                ).get("runs")
                or []
            )
            == 2
        ),
    )
    scene.cluster.kubectl("delete", "ra", "doomed", "-n", scene.namespace, "--timeout=60s")
    for topic in topics:
        handle = temporal_client.get_workflow_handle(
            ids.workflow_id(scene.namespace, "doomed", topic)
        )
        events = [e.event_type async for e in handle.fetch_history_events()]
        assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED in events
    for kind, name in (
        ("deploy", "doomed-worker"),
        ("cm", "doomed-worker-config"),
        ("svc", "doomed-worker"),
    ):
        wait_for(
            f"{kind}/{name} collected",
            lambda k=kind, n=name: get(scene.cluster, k, scene.namespace, n) is None,
        )


async def test_killed_mid_reconcile_converges_without_duplicates(
    scene: Scene, temporal_client: Client
) -> None:
    topics = [f"crash topic {i}" for i in range(12)]
    apply(scene.cluster, agent_manifest("crashy", scene.namespace, scene.sim, topics))
    # Kill as soon as the first child exists: the reconcile is between its writes.
    wait_for(
        "the first child", lambda: get(scene.cluster, "cm", scene.namespace, "crashy-worker-config")
    )
    scene.operator.kill()
    scene.operator.start()

    def converged() -> bool:
        ra = get(scene.cluster, "ra", scene.namespace, "crashy")
        runs = ((ra or {}).get("status") or {}).get("runs") or []
        return len(runs) == len(topics) and condition(ra, "Ready").get("status") == "True"

    wait_for("all topics started after the restart", converged, timeout=90)
    for topic in topics:
        wf_id = ids.workflow_id(scene.namespace, "crashy", topic)
        executions = [w async for w in temporal_client.list_workflows(f"WorkflowId = '{wf_id}'")]
        assert len(executions) == 1, f"{topic}: {len(executions)} executions"
        assert executions[0].status == WorkflowExecutionStatus.RUNNING
    for kind in ("deploy", "cm", "svc"):
        items = scene.cluster.kubectl_json(
            "get", kind, "-n", scene.namespace, "-l", "steadfast.dev/agent=crashy"
        )
        assert len(items["items"]) == 1, kind


def test_scale_subresource_sets_the_floor(
    operator: Operator, kube_cluster: KubeCluster, namespace: str, op_sim: SimHandle
) -> None:
    secret(kube_cluster, namespace, "llm", {"api-key": "sk-sim"})
    workers = {"minReplicas": 0, "maxReplicas": 4, "targetBacklogPerWorker": 50}
    apply(kube_cluster, agent_manifest("floor", namespace, op_sim, ["f"], workers=workers))
    wait_for("the Deployment", lambda: get(kube_cluster, "deploy", namespace, "floor-worker"))
    kube_cluster.kubectl("scale", "ra/floor", "-n", namespace, "--replicas=3")
    ra = get(kube_cluster, "ra", namespace, "floor")
    assert ra is not None
    assert ra["spec"]["workers"]["minReplicas"] == 3

    def replicas() -> int:
        dep = get(kube_cluster, "deploy", namespace, "floor-worker") or {}
        return int((dep.get("spec") or {}).get("replicas") or 0)

    wait_for("the autoscaler to keep the new floor", lambda: replicas() == 3)
    refused = kube_cluster.kubectl(
        "scale", "ra/floor", "-n", namespace, "--replicas=9", check=False
    )
    assert refused.returncode != 0
    assert "minReplicas cannot exceed maxReplicas" in refused.stderr


def test_daily_budget_stops_new_runs(
    operator: Operator, kube_cluster: KubeCluster, namespace: str, op_sim: SimHandle, tmp_path: Path
) -> None:
    secret(kube_cluster, namespace, "llm", {"api-key": "sk-sim"})
    manifest = agent_manifest("thrifty", namespace, op_sim, ["first"])
    apply(kube_cluster, manifest)

    def runs() -> list[dict[str, Any]]:
        ra = get(kube_cluster, "ra", namespace, "thrifty")
        return list(((ra or {}).get("status") or {}).get("runs") or [])

    with worker_process(kube_cluster, namespace, "thrifty", tmp_path, op_sim):
        wait_for("the first run", lambda: [r for r in runs() if r["phase"] == "Completed"], 120)
    spent = runs()[0]["costUSD"]
    assert spent > 0
    # Today's spend is now above the day's budget: a new topic must wait for tomorrow.
    manifest["spec"]["budget"] = {"maxUSDPerRun": spent / 2, "maxUSDPerDay": spent / 2}
    manifest["spec"]["model"]["maxTokens"] = 1
    manifest["spec"]["topics"] = ["first", "second"]
    apply(kube_cluster, manifest)

    def budget_condition() -> dict[str, Any] | None:
        found = condition(get(kube_cluster, "ra", namespace, "thrifty"), "BudgetExhausted")
        return found if found.get("status") == "True" else None

    exhausted = wait_for("BudgetExhausted=True", budget_condition)
    assert exhausted["reason"] == "DailyBudgetReached"
    time.sleep(3)
    assert [r["topic"] for r in runs()] == ["first"]
    # Raising the budget lets the waiting topic start at once.
    manifest["spec"]["budget"] = {"maxUSDPerRun": 1.0, "maxUSDPerDay": 50.0}
    apply(kube_cluster, manifest)
    wait_for("the second topic started", lambda: len(runs()) == 2)


def test_a_deep_agent_runs_its_tool_use_loop_from_kubectl_apply(
    operator: Operator, kube_cluster: KubeCluster, namespace: str, op_sim: SimHandle, tmp_path: Path
) -> None:
    """``research.strategy: deep`` reaches the worker through the operator: the run takes
    four turns (the last asked for the report), and the status shows what it cost and saved.
    Pages stay on loopback: the simulator links to its own, the allow list says so, and
    so does allowPrivateHosts (an address inside is read only from a host named there)."""
    explained = kube_cluster.kubectl("explain", "researchagents.spec.research.maxTurns").stdout
    assert "no tool runs after the last one" in " ".join(explained.split())
    secret(kube_cluster, namespace, "llm", {"api-key": "sk-sim"})
    research = {
        "strategy": "deep",
        "maxTurns": 4,
        "tools": {
            "fetchPage": {
                "allowDomains": ["127.0.0.1", "localhost"],
                "allowPrivateHosts": ["127.0.0.1", "localhost"],
            }
        },
    }
    manifest = agent_manifest(
        "deep", namespace, op_sim, ["deep e2e topic"], research=research, model={"maxTokens": 4000}
    )
    op_sim.set_faults({"search": {"page_links": True}})
    try:
        apply(kube_cluster, manifest)
        with worker_process(kube_cluster, namespace, "deep", tmp_path, op_sim):

            def finished() -> dict[str, Any] | None:
                ra = get(kube_cluster, "ra", namespace, "deep")
                runs = ((ra or {}).get("status") or {}).get("runs") or []
                done = [r for r in runs if r["phase"] == "Completed" and r.get("reportId")]
                return ra if done else None

            ra = wait_for("the deep run Completed in status", finished, timeout=120)
    finally:
        op_sim.set_faults({"search": {}})
    (run,) = ra["status"]["runs"]
    assert run["llmCalls"] == 4
    assert run["costUSD"] > 0
    assert run["avoidedUSD"] == 0
    pages = [e for e in op_sim.entries("pages") if e["outcome"] == "served"]
    assert pages, "the agent fetched no page"

"""The chart's operator and an agent's workers as real pods, from the images built here.

`helm install` of the chart (``chart_env.stack``): the operator pod comes up Ready through
its probes under the restricted Pod Security standard, with a read-only root filesystem,
and reconciles; the worker pods it renders read their mounted configuration and their
Secrets, run topics against Temporal and the simulator, save reports in Postgres, and
answer on /metrics at the pod's address. A worker pod force-deleted in the middle of a
report leaves the run to the pod that replaces it, with no finished LLM call paid twice.
The figures (pod start to polling, kill to resumed) are printed for the note (`-s`).
The drain across a rollout is in ``test_drain_on_pods``, Secret volumes in
``test_secrets_on_pods``.
"""

from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from steadfast_contract import ids
from tests.pods.chart_env import (
    ENFORCE,
    SYSTEM,
    Stack,
    agent,
    apply_agent,
    completed,
    condition,
    pod_time,
    pods,
    ready_pod,
    reports,
)
from tests.support.abandoned import ABANDONED
from tests.support.node import NODE_IP, NODE_NAME
from tests.support.sim import wait_for_report_call
from tests.support.waiting import wait_for

pytestmark = pytest.mark.pods


async def test_operator_pod_reconciles_and_worker_pods_complete_runs(
    stack: Stack, namespace: str
) -> None:
    cluster = stack.cluster
    operator = ready_pod(cluster)
    assert operator is not None
    assert operator["spec"]["nodeName"] == NODE_NAME
    container = operator["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["image"].startswith("localhost/steadfast/operator:")
    ns = cluster.kubectl_json("get", "namespace", SYSTEM)
    assert ns["metadata"]["labels"][ENFORCE] == "restricted"

    topics = ["Durable execution on real pods", "Kubelets built from modules"]
    applied = time.time()
    apply_agent(stack, namespace, agent(stack.sim_url, namespace, "pods-agent", topics, 1))
    worker = wait_for(
        "a Ready worker pod",
        lambda: ready_pod(cluster, namespace, "app.kubernetes.io/name=steadfast-worker"),
        timeout=180,
    )
    created = pod_time(worker["metadata"]["creationTimestamp"])
    ready = pod_time(condition(worker, "Ready")["lastTransitionTime"])
    runs = wait_for(
        "both runs Completed", lambda: completed(cluster, namespace, "pods-agent", 2), 240
    )
    done = time.time()
    wf_ids = [ids.workflow_id(namespace, "pods-agent", t) for t in topics]
    assert sorted(r["workflowId"] for r in runs) == sorted(wf_ids)

    # The reports are in Postgres, written by the pod through the DSN of its Secret.
    saved = await reports(stack.postgres_dsn, wf_ids)
    assert saved == {r["workflowId"]: r["reportId"] for r in runs}

    worker = cluster.kubectl_json("get", "pod", worker["metadata"]["name"], "-n", namespace)
    assert worker["spec"]["nodeName"] == NODE_NAME
    assert worker["status"]["containerStatuses"][0]["restartCount"] == 0
    logs = cluster.kubectl("logs", "-n", namespace, worker["metadata"]["name"]).stdout
    # The worker says where it polls, and its search requests name each topic.
    # (The task queue's "steadfast" prefix shows as [redacted]: it shares 4-character
    # pieces with the test's Postgres password, and no piece of a credential is logged.)
    queue = ids.default_task_queue(namespace, "pods-agent").replace("steadfast", "[redacted]")
    assert f"worker polling task queue {queue} on {NODE_IP}:" in logs
    assert all(t.replace(" ", "+") in logs for t in topics), logs[-2000:]
    # Neither process left asyncio work abandoned (what the other tiers check in-process).
    operator_logs = cluster.kubectl("logs", "-n", SYSTEM, operator["metadata"]["name"]).stdout
    for log in (logs, operator_logs):
        assert not [words for words in ABANDONED if words in log], log[-3000:]
    # The worker logs in UTC, like this machine; the pod's creation stamp has whole seconds.
    (polling_line,) = [line for line in logs.splitlines() if "worker polling" in line]
    polling = dt.datetime.strptime(polling_line[:23], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=dt.UTC)
    print(
        f"\nfigures: agent applied -> worker pod created {created - applied:.0f}s;"
        f" worker pod created -> polling {polling.timestamp() - created:.1f}s,"
        f" -> Ready {ready - created:.0f}s (readiness probe every 10s);"
        f" agent applied -> 2 runs Completed {done - applied:.0f}s"
    )
    async with httpx.AsyncClient() as http:
        url = f"http://{worker['status']['podIP']}:9464/metrics"
        metrics = (await http.get(url, timeout=10)).text
    completed_runs = [
        line for line in metrics.splitlines()
        if line.startswith("steadfast_runs_total{") and 'phase="Completed"' in line
    ]  # fmt: skip
    assert len(completed_runs) == 1, metrics[-2000:]
    assert float(completed_runs[0].rsplit(" ", 1)[1]) == 2.0


@pytest.mark.hostile
async def test_force_deleted_worker_pod_run_resumes_on_another_pod(
    stack: Stack, namespace: str, temporal_client: Client
) -> None:
    cluster, sim = stack.cluster, stack.sim
    sim.reset()
    # About eight seconds of streaming: the pod dies well inside the report.
    sim.set_faults({"llm": {"chunk_delay_ms": 100, "match": "research report"}})
    topic = "What a force-deleted pod leaves behind"
    apply_agent(stack, namespace, agent(stack.sim_url, namespace, "kill-agent", [topic], 1))
    wf_id = ids.workflow_id(namespace, "kill-agent", topic)
    await wait_for_report_call(sim, wf_id, settle=1.0)
    # The one worker pod runs the report (it polls before its readiness probe has passed).
    (first,) = [
        pod for pod in pods(cluster, namespace, "app.kubernetes.io/name=steadfast-worker")
        if pod["status"].get("phase") == "Running"
    ]  # fmt: skip
    name = first["metadata"]["name"]
    cluster.kubectl("delete", "pod", name, "-n", namespace, "--grace-period=0", "--force")
    killed = time.monotonic()
    sim.set_faults({"llm": {"clear": True}})
    second = wait_for(
        "another Ready worker pod",
        lambda: ready_pod(
            cluster, namespace, "app.kubernetes.io/name=steadfast-worker", frozenset({name})
        ),
        timeout=180,
    )
    replaced = time.monotonic()
    runs = wait_for(
        "the run Completed", lambda: completed(cluster, namespace, "kill-agent", 1), 240
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

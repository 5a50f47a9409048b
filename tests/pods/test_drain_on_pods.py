"""A rollout or a scale-down during long reports, on real pods: a busy pod finishes its
calls, then goes.

The e2e tier proves the drain with host processes and a stand-in kubelet
(``tests/e2e/test_operator_drain.py``); here the kubelet is real. Two reports stream for
about forty seconds on the agent's one worker pod when an edit of the model rolls the
Deployment: the replacement comes up, the kubelet sends the busy pod SIGTERM with the
rendered grace period, and the pod must finish both streams (no call cut off, none
asked again) before it exits, well inside that grace. A scale-down stops a pod the same
way: with two workers each holding two report streams, ``kubectl scale`` to one leaves
the ReplicaSet to pick the pod, and whichever it picks is busy.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from tests.pods.chart_env import Stack, agent, apply_agent, completed, pods
from tests.support.sim import SimHandle
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.pods, pytest.mark.hostile]

WORKERS = "app.kubernetes.io/name=steadfast-worker"
#: A report (~100 chunks) streams for about 40 s; query generation for about 2 s.
CHUNK_DELAY_MS = 400


def streaming(sim: SimHandle) -> int:
    """Report streams the simulator is sending right now."""
    return sum(1 for e in sim.entries("llm") if e["stream"] and e["outcome"] == "pending")


def test_a_rollout_lets_the_busy_pod_finish_its_streams(stack: Stack, namespace: str) -> None:
    cluster, sim = stack.cluster, stack.sim
    sim.reset()
    sim.set_faults({"llm": {"chunk_delay_ms": CHUNK_DELAY_MS}})
    topics = ["drain on a real kubelet", "streams across a rollout"]
    manifest = agent(stack.sim_url, namespace, "drainer", topics, 1)
    manifest["spec"]["workers"].update({"autoscaler": "none", "minReplicas": 1})
    apply_agent(stack, namespace, manifest)

    wait_for("both reports streaming", lambda: streaming(sim) == 2, timeout=180)
    (busy,) = [
        p for p in pods(cluster, namespace, WORKERS) if p["status"].get("phase") == "Running"
    ]
    name = busy["metadata"]["name"]
    grace = busy["spec"]["terminationGracePeriodSeconds"]

    manifest["spec"]["model"] = {**manifest["spec"]["model"], "name": "claude-haiku-4-5"}
    apply_agent(stack, namespace, manifest)

    def stopping() -> dict[str, Any] | None:
        proc = cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False)
        if proc.returncode != 0:
            raise AssertionError(f"{name} went before it was seen stopping")
        pod: dict[str, Any] = json.loads(proc.stdout)
        return pod if pod["metadata"].get("deletionTimestamp") else None

    wait_for("the rollout to stop the busy pod", stopping, timeout=120)
    # Stopped in the middle of both reports: this is what the pod must not cut off.
    assert streaming(sim) == 2

    # Both streams have ~40 s to go at most; the rendered grace is far longer.
    drained = drained_and_served_once(
        stack, namespace, name, "drainer", topics, timeout=min(grace, 150)
    )
    print(f"\nfigures: busy pod stopped mid-stream, drained and gone in {drained:.0f}s")


def test_a_scale_down_lets_the_stopped_pod_finish_its_streams(stack: Stack, namespace: str) -> None:
    cluster, sim = stack.cluster, stack.sim
    sim.reset()
    sim.set_faults({"llm": {"chunk_delay_ms": CHUNK_DELAY_MS}})
    topics = [f"scale-down stream {i}" for i in range(4)]
    manifest = agent(stack.sim_url, namespace, "shrinker", topics, 2)
    # Two workers of two slots each: once all four reports stream, each pod holds two.
    manifest["spec"]["workers"].update(
        {"autoscaler": "none", "minReplicas": 2, "maxConcurrentActivities": 2}
    )
    apply_agent(stack, namespace, manifest)

    wait_for("four reports streaming", lambda: streaming(sim) == 4, timeout=240)
    before = {p["metadata"]["name"] for p in pods(cluster, namespace, WORKERS)}
    assert len(before) == 2, before

    cluster.kubectl("scale", "deployment", "shrinker-worker", "-n", namespace, "--replicas=1")

    def stopping() -> str | None:
        for pod in pods(cluster, namespace, WORKERS):
            if pod["metadata"].get("deletionTimestamp"):
                return str(pod["metadata"]["name"])
        return None

    name = wait_for("the scale-down to stop a pod", stopping, timeout=60)
    assert name in before
    # Stopped in the middle of its two reports: this is what the pod must not cut off.
    assert streaming(sim) == 4

    drained = drained_and_served_once(stack, namespace, name, "shrinker", topics, timeout=150)
    print(f"\nfigures: scaled-down pod stopped mid-stream, drained and gone in {drained:.0f}s")
    remaining = {p["metadata"]["name"] for p in pods(cluster, namespace, WORKERS)}
    assert remaining == before - {name}


def drained_and_served_once(
    stack: Stack, namespace: str, pod: str, agent_name: str, topics: list[str], timeout: float
) -> float:
    """Wait for the stopped ``pod`` to exit and every run to complete, then check that no
    call was cut off or asked twice and that the pod left once its calls were done, not
    when its grace ran out. Returns the seconds from now until the pod was gone."""
    cluster, sim = stack.cluster, stack.sim
    began = time.monotonic()

    def gone() -> bool:
        proc = cluster.kubectl("get", "pod", pod, "-n", namespace, check=False)
        return proc.returncode != 0 and "NotFound" in proc.stderr

    wait_for(f"the stopped pod {pod} to exit", gone, timeout=timeout)
    drained, gone_at = time.monotonic() - began, time.time()
    runs = wait_for(
        "every run Completed",
        lambda: completed(cluster, namespace, agent_name, len(topics)),
        timeout=120,
    )
    entries = sim.entries("llm")
    cut = [(e["summary"][:40], e["outcome"]) for e in entries if e["outcome"] != "served"]
    assert cut == [], f"calls cut off or failed: {cut}"
    served = Counter(e["key"] for e in entries)
    assert set(served.values()) == {1}, f"calls asked twice: {served}"
    assert len(entries) == 2 * len(topics)
    assert all(r["llmCalls"] == 2 and r["retries"] == 0 for r in runs), runs
    last_call = max(e["ended_at"] for e in entries)
    assert gone_at - last_call < 20, f"gone {gone_at - last_call:.0f}s after its last call"
    return drained

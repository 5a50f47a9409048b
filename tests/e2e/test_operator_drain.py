"""Scaling down and rolling never cut a call in flight; only edits the worker reads roll it.

The scale-down test is issue 9's "20 long runs across a scale-down": twenty runs
whose reports stream for about a minute, on four workers of five activity slots
each, so every worker holds five streams when the operator scales to one; an
edit of the model then rolls the last worker, still streaming. The
workers are host processes that :class:`tests.e2e.hostpods.HostKubelet` runs for
the Deployment's pods and stops as a kubelet would (SIGTERM, SIGKILL after the
pod's grace period); its docstring lists the lifecycle assumptions a port to
real pods must keep.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.hostpods import HostKubelet
from tests.e2e.operator_env import Scene, agent_manifest, apply, get, wait_for
from tests.support.sim import running_sim

pytestmark = [pytest.mark.e2e, pytest.mark.hostile]

RUNS = 20
#: Seconds between streamed chunks: a simulated report (~100 chunks) streams for
#: 45-55 s, query generation (~5 chunks) takes about 2 s.
CHUNK_DELAY_MS = 500
#: What a stopped worker waited for its activities before this was fixed. A stream
#: still running this long after its worker's SIGTERM would have been cut off.
OLD_WAIT_SECONDS = 30.0


def test_scale_down_and_rollout_never_cut_a_call_in_flight(scene: Scene, tmp_path: Path) -> None:
    started = time.monotonic()
    workers = {
        "minReplicas": 0,
        "maxReplicas": 4,
        "targetBacklogPerWorker": 5,
        "maxConcurrentActivities": 5,
        # Long enough for the twenty report streams to start before the operator
        # scales down (the backlog is gone once the workers take the query calls).
        "scaleDownDelay": "12s",
    }
    topics = [f"drain topic {i}" for i in range(RUNS)]
    with (
        running_sim() as sim,
        HostKubelet(scene.cluster, scene.namespace, "drainer", tmp_path / "pods") as kubelet,
    ):
        sim.set_faults({"llm": {"chunk_delay_ms": CHUNK_DELAY_MS}})
        manifest = agent_manifest("drainer", scene.namespace, sim, topics, workers=workers)
        apply(scene.cluster, manifest)

        def replicas() -> int:
            dep = get(scene.cluster, "deploy", scene.namespace, "drainer-worker") or {}
            return int((dep.get("spec") or {}).get("replicas") or 0)

        def runs() -> list[dict[str, Any]]:
            ra = get(scene.cluster, "ra", scene.namespace, "drainer") or {}
            return list((ra.get("status") or {}).get("runs") or [])

        wait_for("4 worker replicas for 20 queued runs", lambda: replicas() == 4, timeout=60)
        wait_for("the scale-down to one worker", lambda: replicas() == 1, timeout=90)
        scaled_down = time.time()
        wait_for("three workers stopped", lambda: len(kubelet.stopped()) == 3, timeout=10)
        (survivor,) = kubelet.running()
        # A new model rolls the last worker while its five reports still stream.
        manifest["spec"]["model"] = {**manifest["spec"]["model"], "name": "claude-haiku-4-5"}
        apply(scene.cluster, manifest)
        wait_for("the rollout to stop the last worker", lambda: survivor.sigterm_at, timeout=30)

        def completed() -> list[dict[str, Any]] | None:
            found = runs()
            finished = len(found) == RUNS and all(r["phase"] == "Completed" for r in found)
            return found if finished else None

        done = wait_for("all runs Completed", completed, timeout=150, every=1.0)
        busy = kubelet.stopped()
        # With no run left, the workers go too: idle, each exits at once. A shorter
        # scaleDownDelay gets there sooner, and rolls nothing (the worker never reads it).
        manifest["spec"]["workers"]["scaleDownDelay"] = "1s"
        apply(scene.cluster, manifest)
        wait_for("replicas back to zero", lambda: replicas() == 0, timeout=60)
        wait_for("every worker to exit", lambda: all(
            r.exited_at is not None for r in kubelet.records.values()
        ), timeout=30)  # fmt: skip
        idle = [r for r in kubelet.stopped() if r not in busy]
        entries = sim.entries("llm")
        assert kubelet.errors == [], kubelet.errors

    # No call was cut off, repeated or served twice: one complete answer per request.
    cut = [e for e in entries if e["outcome"] != "served"]
    assert cut == [], f"calls cut off or failed: {[(e['summary'], e['outcome']) for e in cut]}"
    served, attempts = Counter(e["key"] for e in entries), len(entries)
    assert set(served.values()) == {1}, f"calls served twice: {served}"
    assert attempts == 2 * RUNS, f"{attempts} LLM requests for {RUNS} runs of two calls"
    streams = [e for e in entries if e["stream"]]
    assert len(streams) == RUNS, f"{len(streams)} report streams for {RUNS} runs"
    assert all(r["reportId"] and r["llmCalls"] == 2 and r["retries"] == 0 for r in done)

    # The scale-down and the rollout stopped workers in the middle of their streams ...
    assert len(busy) >= 4, f"only {len(busy)} pods stopped by the scale-down and rollout"
    assert survivor in busy
    first_sigterm = min(r.sigterm_at or 0.0 for r in busy)
    assert first_sigterm >= scaled_down - 5
    in_flight = [e for e in streams if e["started_at"] < first_sigterm < e["ended_at"]]
    outlasting = [e for e in in_flight if e["ended_at"] - first_sigterm > OLD_WAIT_SECONDS]
    assert outlasting, "no stream outlasted the old 30 s wait: the test would prove nothing"
    assert [e for e in in_flight if e["ended_at"] > (survivor.sigterm_at or 0.0) + 5]
    # ... each finished its calls, then exited on its own; the idle one did not linger.
    for rec in [*busy, *idle]:
        assert rec.sigkill_at is None, f"{rec.pod} was SIGKILLed"
        assert rec.returncode == 0, f"{rec.pod} exited {rec.returncode}"
    assert idle, "no idle worker was stopped"
    assert {r.pod for r in kubelet.records.values()} == {r.pod for r in [*busy, *idle]}
    assert all((r.drained_seconds or 0.0) < 10 for r in idle), [r.drained_seconds for r in idle]
    drains = sorted(round(r.drained_seconds or 0.0, 1) for r in busy)
    print(
        f"{RUNS} runs in {time.monotonic() - started:.0f}s; {len(busy)} workers stopped "
        f"mid-stream (the last by the rollout, drained {survivor.drained_seconds or 0.0:.1f}s) "
        f"drained for {drains}s, the idle ones for "
        f"{[round(r.drained_seconds or 0.0, 1) for r in idle]}s "
        f"(grace {sorted({r.grace_seconds for r in busy})}s); {len(in_flight)} streams in "
        f"flight at the first SIGTERM, {len(outlasting)} outlasting the old "
        f"{OLD_WAIT_SECONDS:g}s wait"
    )


def test_an_edit_the_worker_never_reads_leaves_its_pods_alone(scene: Scene) -> None:
    workers = {"autoscaler": "none", "minReplicas": 1}
    manifest = agent_manifest("steady", scene.namespace, scene.sim, ["t1"], workers=workers)
    apply(scene.cluster, manifest)

    def deployment() -> dict[str, Any] | None:
        return get(scene.cluster, "deploy", scene.namespace, "steady-worker")

    def config() -> dict[str, Any]:
        cm = get(scene.cluster, "cm", scene.namespace, "steady-worker-config") or {}
        return dict(yaml.safe_load((cm.get("data") or {}).get("worker.yaml") or "{}") or {})

    before = wait_for("the Deployment", deployment)
    manifest["spec"]["budget"] = {**manifest["spec"].get("budget", {}), "maxUSDPerDay": 7.5}
    manifest["spec"]["schedule"] = "0 6 * * 1"
    apply(scene.cluster, manifest)
    wait_for(
        "the new day budget in the ConfigMap",
        lambda: config().get("budget", {}).get("maxUSDPerDay") == 7.5,
    )
    time.sleep(2)  # a status tick or two, in case a write were to follow
    after = deployment()
    assert after is not None
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]

    manifest["spec"]["model"] = {**manifest["spec"]["model"], "name": "claude-haiku-4-5"}
    apply(scene.cluster, manifest)
    rolled = wait_for(
        "a new pod template for the new model",
        lambda: (d := deployment()) and d["spec"]["template"] != before["spec"]["template"] and d,
    )
    annotations = rolled["spec"]["template"]["metadata"]["annotations"]
    assert annotations != before["spec"]["template"]["metadata"]["annotations"]

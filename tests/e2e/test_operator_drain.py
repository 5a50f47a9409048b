"""Scaling down and rolling never cut a call in flight; only edits the worker reads roll it.

The scale-down test is issue 9's "20 long runs across a scale-down": twenty runs
whose reports stream for about 50 s, on four workers of five activity slots each,
so every worker holds five streams. While they stream, an edit of the model rolls
all four workers, and the operator keeps four workers however empty the backlog
is; once the calls are done it scales to zero. The workers are host processes
that :class:`tests.e2e.hostpods.HostKubelet` runs for the Deployment's pods and
stops as a kubelet would (SIGTERM, SIGKILL after the pod's grace period); its
docstring lists the lifecycle assumptions a port to real pods must keep.
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
        # Short: the backlog is gone once the workers have taken the query calls,
        # seconds before the reports start, so only the calls in flight hold workers.
        "scaleDownDelay": "3s",
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

        def streaming() -> int:
            entries = sim.entries("llm")
            cut = [e["summary"][:40] for e in entries if e["outcome"] in ("aborted", "fault")]
            assert not cut, f"{len(cut)} calls cut off while the workers were stopped"
            return sum(1 for e in entries if e["stream"] and e["outcome"] == "pending")

        wait_for("4 worker replicas for 20 queued runs", lambda: replicas() == 4, timeout=60)
        wait_for("all 20 reports streaming", lambda: streaming() == RUNS, timeout=90)
        first = kubelet.running()
        assert len(first) == 4
        # A new model rolls every worker while its five reports stream.
        manifest["spec"]["model"] = {**manifest["spec"]["model"], "name": "claude-haiku-4-5"}
        apply(scene.cluster, manifest)
        wait_for("the rollout to stop the four workers", lambda: all(
            r.sigterm_at for r in first
        ), timeout=60)  # fmt: skip
        # (streams in flight, replicas) while the calls run: the operator's capacity.
        samples: list[tuple[int, int]] = []

        def completed() -> list[dict[str, Any]] | None:
            if pending := streaming():
                samples.append((pending, replicas()))
            ra = get(scene.cluster, "ra", scene.namespace, "drainer") or {}
            found = list((ra.get("status") or {}).get("runs") or [])
            finished = len(found) == RUNS and all(r["phase"] == "Completed" for r in found)
            return found if finished else None

        done = wait_for("all runs Completed", completed, timeout=150, every=1.0)
        busy = kubelet.stopped()
        # With no run left, the workers go too: idle, each exits at once.
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

    # The operator kept capacity for the calls in flight (five slots a worker) ...
    short = [(n, r) for n, r in samples if r * 5 < n]
    assert samples, "no stream was seen in flight after the rollout"
    assert short == [], f"(streams in flight, replicas) below their slots: {short}"
    # ... the rollout stopped all four in the middle of their streams ...
    first_sigterm = min(r.sigterm_at or 0.0 for r in first)
    in_flight = [e for e in streams if e["started_at"] < first_sigterm < e["ended_at"]]
    assert len(in_flight) == RUNS
    outlasting = [e for e in in_flight if e["ended_at"] - first_sigterm > OLD_WAIT_SECONDS]
    assert outlasting, "no stream outlasted the old 30 s wait: the test would prove nothing"
    # ... each finished its calls, then exited on its own; idle ones did not linger.
    assert set(map(id, first)) <= set(map(id, busy))
    for rec in [*busy, *idle]:
        assert rec.sigkill_at is None, f"{rec.pod} was SIGKILLed"
        assert rec.returncode == 0, f"{rec.pod} exited {rec.returncode}"
    assert idle, "no idle worker was stopped"
    assert all((r.drained_seconds or 0.0) < 10 for r in idle), [r.drained_seconds for r in idle]
    print(
        f"{RUNS} runs in {time.monotonic() - started:.0f}s; the rollout stopped 4 workers "
        f"mid-stream, drained for {sorted(round(r.drained_seconds or 0.0, 1) for r in first)}s "
        f"(grace {sorted({r.grace_seconds for r in first})}s); {len(outlasting)} of "
        f"{len(in_flight)} streams outlasted the old {OLD_WAIT_SECONDS:g}s wait; (streams, "
        f"replicas) {sorted(set(samples), reverse=True)}; {len(idle)} idle workers exited in "
        f"{sorted(round(r.drained_seconds or 0.0, 1) for r in idle)}s"
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

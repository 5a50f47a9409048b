"""Operator benchmarks on the real control plane and a real Temporal dev server.

    python bench/operator_bench.py reconcile [--agents 20]
    python bench/operator_bench.py scale [--trials 10]
    python bench/operator_bench.py fleet [--agents 300] [--window 60]

* ``reconcile``: from ``kubectl apply`` of an agent to its Deployment existing,
  and to all its workflows started (seen by Temporal): p50/p95.
* ``scale``: from a backlog appearing on an idle agent's task queue (a workflow
  started by a client, no worker polling) to the Deployment's replicas
  changing: p50/p95. A no-op worker then drains the queue so the next trial
  starts from zero again.
* ``fleet``: N agents under one operator at steady state: the operator's RSS and
  CPU, API-server requests per minute (the server's own counter) and Temporal
  frontend requests per second (the dev server's own counter).

Every run starts its own cluster (``tests.support.kube``), dev server and
``steadfast operator`` process with the operator's default status interval
(5 s) unless ``--interval`` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from tests.support.kube import KubeCluster, start_cluster  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.temporal import DEV_SERVER_ARGS  # noqa: E402

from operator_noop import NoopResearch  # noqa: E402
from steadfast_contract import ids  # noqa: E402
from steadfast_dev.devserver import temporal_binary  # noqa: E402

STEADFAST = str(Path(sys.executable).with_name("steadfast"))
NS = "bench"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name}: n={len(values)} p50={pct(values, 0.5):.2f}s p95={pct(values, 0.95):.2f}s "
        f"mean={statistics.fmean(values):.2f}s max={max(values):.2f}s"
    )


def poll(probe: Callable[[], Any], timeout: float = 120.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("gave up waiting")


def manifest(name: str, topics: list[str], **workers: Any) -> dict[str, Any]:
    return {
        "apiVersion": "steadfast.dev/v1alpha1",
        "kind": "ResearchAgent",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "topics": topics,
            "search": {"endpoint": "http://127.0.0.1:9/search"},
            "workers": workers,
        },
    }


def kubectl_apply(cluster: KubeCluster, *docs: dict[str, Any]) -> None:
    # A busy API server (hundreds of agents arriving at once) can be slow to answer.
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), timeout=900)


def get_json(cluster: KubeCluster, *args: str) -> Any:
    proc = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


@contextmanager
def operator_process(cluster: KubeCluster, temporal: str, interval: float) -> Iterator[int]:
    metrics_port, health_port = free_port(), free_port()
    log_path = Path(tempfile.mkdtemp(prefix="operator-bench-")) / "operator.log"
    argv = [
        STEADFAST, "operator", "-n", NS, "--kubeconfig", str(cluster.kubeconfig),
        "--worker-image", "steadfast/worker:bench", "--temporal-address", temporal,
        "--status-interval", str(interval), "--metrics-port", str(metrics_port),
        "--health-port", str(health_port), "--listen", "127.0.0.1", "--no-events",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=cluster.env())

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{health_port}/healthz", timeout=1).is_success
        except httpx.HTTPError:
            return False

    poll(healthy, timeout=60, every=0.2)
    print(f"operator pid {proc.pid}, log {log_path}", flush=True)
    try:
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def start_env(metrics_port: int) -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        ip="127.0.0.1",
        port=free_port(),
        ui=False,
        dev_server_extra_args=[*DEV_SERVER_ARGS, "--metrics-port", str(metrics_port)],
    )


def setup_cluster() -> KubeCluster:
    cluster = start_cluster(nodes=2)
    cluster.kubectl("apply", "-f", str(REPO / "crds" / "researchagents.steadfast.dev.yaml"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/researchagents.steadfast.dev", "--timeout=60s"
    )
    poll(lambda: cluster.kubectl("get", "ra", "-A", check=False).returncode == 0, every=0.3)
    cluster.kubectl("create", "namespace", NS)
    return cluster


async def bench_reconcile(cluster: KubeCluster, client: Client, args: argparse.Namespace) -> None:
    deploy_s, started_s = [], []
    for i in range(args.agents):
        name = f"rec-{i}"
        topics = [f"topic {i} a", f"topic {i} b"]
        t0 = time.monotonic()
        kubectl_apply(cluster, manifest(name, topics, autoscaler="none"))
        poll(lambda n=name: get_json(cluster, "deploy", f"{n}-worker", "-n", NS))
        deploy_s.append(time.monotonic() - t0)
        for topic in topics:
            handle = client.get_workflow_handle(ids.workflow_id(NS, name, topic))
            while True:
                try:
                    await handle.describe()
                    break
                except Exception:
                    await asyncio.sleep(0.05)
        started_s.append(time.monotonic() - t0)
    print(summary("apply -> Deployment present", deploy_s))
    print(summary("apply -> all workflows started", started_s))


async def bench_scale(cluster: KubeCluster, client: Client, args: argparse.Namespace) -> None:
    name = "scaler"
    task_queue = ids.default_task_queue(NS, name)
    workers = {"minReplicas": 0, "maxReplicas": 5, "targetBacklogPerWorker": 1}
    kubectl_apply(cluster, manifest(name, ["seed"], scaleDownDelay="2s", **workers))

    def replicas() -> int:
        dep = get_json(cluster, "deploy", f"{name}-worker", "-n", NS) or {}
        return int((dep.get("spec") or {}).get("replicas") or 0)

    async def drain() -> None:
        async with Worker(client, task_queue=task_queue, workflows=[NoopResearch]):
            while replicas() != 0:  # noqa: ASYNC110  (polling the API server: no event)
                await asyncio.sleep(0.2)

    poll(lambda: get_json(cluster, "deploy", f"{name}-worker", "-n", NS))
    await drain()
    reactions = []
    for trial in range(args.trials):
        # Draining ends on a status tick; without a random offset every trial would
        # start just after a tick and measure the worst case only.
        await asyncio.sleep(random.uniform(0, args.interval))
        t0 = time.monotonic()
        await client.start_workflow(
            "ResearchWorkflow", {}, id=f"bench-{uuid.uuid4().hex}", task_queue=task_queue
        )
        while replicas() == 0:  # noqa: ASYNC110  (polling the API server: no event)
            await asyncio.sleep(0.05)
        reactions.append(time.monotonic() - t0)
        print(f"trial {trial}: {reactions[-1]:.2f}s", flush=True)
        await drain()
    print(summary("backlog -> replicas changed", reactions))


def _sum_metric(text: str, name: str, where: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and where in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def apiserver_requests(cluster: KubeCluster) -> float:
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    return _sum_metric(text, "apiserver_request_total")


def temporal_requests(metrics_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    return _sum_metric(text, "service_requests", 'service_name="frontend"')


async def bench_fleet(
    cluster: KubeCluster, client: Client, args: argparse.Namespace, pid: int, t_metrics: int
) -> None:
    docs = [manifest(f"fleet-{i}", [f"fleet topic {i}"]) for i in range(args.agents)]
    t0 = time.monotonic()
    for start in range(0, len(docs), 25):
        kubectl_apply(cluster, *docs[start : start + 25])

    def ready_count() -> int:
        items = (get_json(cluster, "ra", "-n", NS) or {}).get("items") or []
        return sum(
            1
            for ra in items
            for c in (ra.get("status") or {}).get("conditions") or []
            if c["type"] == "Ready" and c["status"] == "True"
        )

    poll(lambda: ready_count() >= args.agents, timeout=900, every=2)
    print(f"{args.agents} agents Ready after {time.monotonic() - t0:.1f}s", flush=True)
    await asyncio.sleep(args.interval * 3)  # let start-up bursts settle
    proc = psutil.Process(pid)
    proc.cpu_percent(None)
    api0, tmp0, w0 = apiserver_requests(cluster), temporal_requests(t_metrics), time.monotonic()
    rss = []
    while time.monotonic() - w0 < args.window:
        rss.append(proc.memory_info().rss)
        await asyncio.sleep(2)
    cpu = proc.cpu_percent(None)
    elapsed = time.monotonic() - w0
    api1, tmp1 = apiserver_requests(cluster), temporal_requests(t_metrics)
    mib = 2**20
    print(f"operator RSS: max {max(rss) / mib:.0f} MiB, mean {statistics.fmean(rss) / mib:.0f} MiB")
    print(f"operator CPU: {cpu:.1f}% of one core over {elapsed:.0f}s")
    print(f"API server requests: {(api1 - api0) / elapsed * 60:.0f}/min (whole cluster)")
    print(f"Temporal frontend requests: {(tmp1 - tmp0) / elapsed:.1f}/s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=["reconcile", "scale", "fleet"])
    parser.add_argument("--agents", type=int, default=0)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=5.0)
    args = parser.parse_args()
    args.agents = args.agents or {"reconcile": 20, "fleet": 300}.get(args.which, 0)
    t_metrics = free_port()
    env = await start_env(t_metrics)
    cluster = setup_cluster()
    try:
        address = env.client.service_client.config.target_host
        with operator_process(cluster, address, args.interval) as pid:
            if args.which == "reconcile":
                await bench_reconcile(cluster, env.client, args)
            elif args.which == "scale":
                await bench_scale(cluster, env.client, args)
            else:
                await bench_fleet(cluster, env.client, args, pid, t_metrics)
    finally:
        cluster.stop()
        await env.shutdown()


if __name__ == "__main__":
    code = 0
    try:
        asyncio.run(main())
    except BaseException:
        traceback.print_exc()
        code = 1
    # temporalio's core can crash during interpreter teardown (sdk-python#300).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

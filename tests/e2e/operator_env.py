"""Shared pieces of the operator's e2e tests: an operator process, agents, workers.

Each test runs its own ``steadfast operator`` process, scoped to the test's
namespace, so request counts and kills concern that test alone. Workers are
``steadfast worker`` processes started outside any pod (kwok pods run
nothing), configured from the ConfigMap the operator rendered plus the
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.support.kube import REPO, KubeCluster
from tests.support.ports import free_port
from tests.support.sim import SimHandle, running_sim
from tests.support.waiting import wait_for

from steadfast_dev.processes import terminate

CRD = REPO / "crds" / "researchagents.steadfast.dev.yaml"
STORE_SECRET = "reports-db"
"""The Secret every test namespace holds with the e2e tier's Postgres DSN (key ``dsn``)."""
STEADFAST = str(Path(sys.executable).with_name("steadfast"))


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


def report_store_dsn() -> str:
    """The e2e tier's Postgres DSN (``make e2e`` starts it); CI must have one."""
    dsn = os.environ.get("STEADFAST_TEST_POSTGRES_DSN", "")
    if not dsn:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("STEADFAST_TEST_POSTGRES_DSN is not set (run `make e2e`)")
        pytest.skip("STEADFAST_TEST_POSTGRES_DSN is not set; run scripts/start-postgres")
    return dsn


@pytest.fixture(scope="session")
def op_sim() -> Iterator[SimHandle]:
    """The LLM and search simulator the agents' workers talk to (no faults)."""
    with running_sim() as handle:
        yield handle


class Operator:
    """A ``steadfast operator`` subprocess for one namespace."""

    def __init__(
        self, cluster: KubeCluster, namespace: str, temporal: str, log: Path, *extra: str
    ) -> None:
        self.cluster, self.namespace, self.temporal, self.log = cluster, namespace, temporal, log
        self.extra = list(extra)
        """More ``steadfast operator`` flags, after the defaults."""
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.kubeconfig = cluster.kubeconfig
        """Admin by default; a test of RBAC gives a ServiceAccount's."""

    def start(self) -> None:
        argv = [
            STEADFAST,
            "operator",
            "--namespace",
            self.namespace,
            "--kubeconfig",
            str(self.kubeconfig),
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
            *self.extra,
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


@contextmanager
def running_operator(
    cluster: KubeCluster, namespace: str, temporal: str, log: Path, *extra: str
) -> Iterator[Operator]:
    """An operator for ``namespace`` that deletes the namespace's agents before it stops."""
    op = Operator(cluster, namespace, temporal, log, *extra)
    op.start()
    try:
        yield op
    finally:
        # While the operator still runs, so finalizers cancel runs and let agents go
        # (a namespace deleted with agents but no operator would never finish).
        if op.proc is not None and op.proc.poll() is None:
            cluster.kubectl("delete", "ra", "--all", "-n", namespace, "--timeout=60s", check=False)
        op.stop()


@dataclass(frozen=True)
class Scene:
    """Where an operator e2e test works: the cluster, its namespace (with the operator
    running and the ``llm`` Secret the agents name) and the simulator."""

    operator: Operator
    cluster: KubeCluster
    namespace: str
    sim: SimHandle


@pytest.fixture
def scene(
    operator: Operator, kube_cluster: KubeCluster, namespace: str, op_sim: SimHandle
) -> Scene:
    secret(kube_cluster, namespace, "llm", {"api-key": "sk-sim"})
    return Scene(operator, kube_cluster, namespace, op_sim)


@pytest.fixture
def operator(
    crd: None, kube_cluster: KubeCluster, namespace: str, temporal_address: str, tmp_path: Path
) -> Iterator[Operator]:
    store_secret(kube_cluster, namespace)
    with running_operator(
        kube_cluster, namespace, temporal_address, tmp_path / "operator.log"
    ) as op:
        yield op


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
    # Reports go to the e2e tier's Postgres (the namespace fixture's Secret): in a
    # cluster an agent without a durable store gets no worker (NoDurableStore).
    body["storage"] = {"postgresSecretRef": {"name": STORE_SECRET, "key": "dsn"}}
    body["topics"] = topics
    for key, value in spec.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return {
        "apiVersion": "steadfast.dev/v1alpha1",
        "kind": "ResearchAgent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def apply(
    cluster: KubeCluster, *docs: dict[str, Any], check: bool = True, dry_run: bool = False
) -> str:
    """``kubectl apply`` the documents; with ``dry_run`` the server validates, stores nothing."""
    args = ["apply", "-f", "-", *(["--dry-run=server"] if dry_run else [])]
    proc = cluster.kubectl(*args, input=yaml.safe_dump_all(docs), check=False)
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


def store_secret(cluster: KubeCluster, namespace: str) -> None:
    """The ``reports-db`` Secret the agents of :func:`agent_manifest` name."""
    secret(cluster, namespace, STORE_SECRET, {"dsn": report_store_dsn()})


def tls_secret(
    cluster: KubeCluster, namespace: str, name: str, cert: Path, key: Path, ca: Path
) -> None:
    """A TLS Secret as ``spec.temporal.tls.secretName`` expects it, from PEM files."""
    data = {"tls.crt": cert.read_text(), "tls.key": key.read_text(), "ca.crt": ca.read_text()}
    secret(cluster, namespace, name, data)


def get(cluster: KubeCluster, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def condition(agent: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((agent or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def mount_secrets(
    cluster: KubeCluster, namespace: str, dep: dict[str, Any], config: Any, root: Path
) -> None:
    """Write the Secrets the pod mounts under ``root`` and point ``config`` at them.

    What kubelet would do for a Secret volume: each key (or each of ``items``)
    becomes a file in the mount path. Config values under a mount path move to the
    host-local copy.
    """
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    moved: dict[str, str] = {}
    for mount in pod["containers"][0].get("volumeMounts") or []:
        source = volumes[mount["name"]].get("secret")
        if source is None:
            continue
        sec = get(cluster, "secret", namespace, source["secretName"])
        assert sec is not None, f"the pod mounts Secret {source['secretName']}, which is missing"
        local = root / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        data = sec.get("data") or {}
        # Without ``items`` every key becomes a file of its name; with it, only those.
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            (local / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))
        moved[mount["mountPath"].rstrip("/")] = str(local)

    def relocate(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: relocate(v) for k, v in node.items()}
        if isinstance(node, str):
            for mounted, local_dir in moved.items():
                if node == mounted or node.startswith(mounted + "/"):
                    return local_dir + node[len(mounted) :]
        return node

    config.update(relocate(config))


@contextmanager
def worker_process(
    cluster: KubeCluster, namespace: str, agent: str, tmp_path: Path, sim: SimHandle
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker configured from the rendered ConfigMap and the Deployment's env names."""
    cm = wait_for(
        "the worker ConfigMap", lambda: get(cluster, "cm", namespace, f"{agent}-worker-config")
    )
    config = yaml.safe_load(cm["data"]["worker.yaml"])
    # Host-local ports only; everything else is what a pod would read (no SQLite file:
    # the reports go to the tier's Postgres).
    config["worker"]["metricsPort"] = 0
    config["worker"]["sdkMetricsPort"] = 0
    config["worker"]["gracefulShutdown"] = "2s"
    dep = get(cluster, "deploy", namespace, f"{agent}-worker")
    assert dep is not None
    mount_secrets(cluster, namespace, dep, config, tmp_path / f"{agent}-mounts")
    path = tmp_path / f"{agent}-worker.yaml"
    path.write_text(yaml.safe_dump(config))
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
        terminate(proc, grace=20)
        log.close()

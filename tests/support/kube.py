"""A real Kubernetes control plane on loopback, for the e2e tests and ``hack/cluster``.

docs/design.md §6: the tests talk to the real thing. This module starts etcd,
kube-apiserver (TLS, RBAC, service-account signing keys), kube-controller-manager,
kube-scheduler and kwok (which plays the kubelets of N fake Nodes), all built by
``hack/k8s-binaries``, on free 127.0.0.1 ports with certificates minted for this one
cluster. Every process runs in its own process group and dies with its parent, so
a failed or killed test run leaves nothing behind. ``upstream_crd()`` finds the
Prometheus Operator and KEDA CRDs the same script fetches at pinned versions.

Where the binaries are comes from ``kube_binaries``, certificates and kubeconfigs
from ``kube_pki``, spawning, readiness waits and
teardown from ``kube_procs``. Only the standard library and the ``openssl`` CLI are
used, so ``hack/cluster`` can run it before the project's venv exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.kube_binaries import (
    BINARIES,
    K8S_BINARIES_SCRIPT,
    REPO,
    KubeBinaries,
    pinned_versions,
    upstream_crd,
    upstream_crds_dir,
)
from tests.support.kube_pki import SERVER_SANS, make_pki, write_kubeconfig
from tests.support.kube_procs import (
    TMP_PREFIX,
    ClusterStartError,
    Component,
    cleanup,
    https_ok,
    spawn,
    sweep_stale_workdirs,
    terminate,
    wait_ready,
)
from tests.support.ports import free_port

__all__ = [
    "BINARIES",
    "K8S_BINARIES_SCRIPT",
    "KWOK_NODE_ANNOTATION",
    "REPO",
    "SERVER_SANS",
    "SERVICE_ACCOUNT_ISSUER",
    "SERVICE_CIDR",
    "TMP_PREFIX",
    "ClusterStartError",
    "Component",
    "KubeBinaries",
    "KubeCluster",
    "make_pki",
    "pinned_versions",
    "start_cluster",
    "sweep_stale_workdirs",
    "upstream_crd",
    "upstream_crds_dir",
    "write_kubeconfig",
]

#: kwok manages only Nodes carrying this annotation, so it never touches real ones.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


# --- the cluster ---------------------------------------------------------------------


@dataclass
class KubeCluster:
    """A started control plane. Use ``start_cluster()``; stop with ``stop()`` or ``with``."""

    workdir: Path
    binaries: KubeBinaries
    nodes: int = 2
    die_with_parent: bool = True
    ports: dict[str, int] = field(default_factory=dict)
    startup_seconds: float = 0.0
    components: list[Component] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Whatever happens to the caller (an exception, interpreter exit), the
        # processes go and a healthy run's workdir is removed.
        self._remove_workdir = [False]
        self._finalizer = weakref.finalize(
            self, cleanup, self.components, self.workdir, self._remove_workdir
        )

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def env(self) -> dict[str, str]:
        """The environment for kubectl, helm and client libraries aimed at this cluster."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.binaries.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        # Keep kubectl's discovery cache and helm's state inside the cluster's dir.
        env["KUBECACHEDIR"] = str(self.workdir / "kube-cache")
        for kind in ("CACHE", "CONFIG", "DATA"):
            env[f"HELM_{kind}_HOME"] = str(self.workdir / "helm" / kind.lower())
        return env

    def run(
        self, tool: str, *args: str, input: str | None = None, check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run a built binary (``kubectl``, ``helm``, ...) against this cluster."""
        proc = subprocess.run(
            [self.binaries.path(tool), *args],
            input=input, env=self.env(), capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode, proc.args, output=proc.stdout, stderr=proc.stderr
            )
        return proc

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, **kwargs)

    def helm(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, **kwargs)

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def token_kubeconfig(self, token: str, path: Path) -> Path:
        """A kubeconfig that authenticates with a bearer token only (no client cert)."""
        return write_kubeconfig(path, self.server, self.pki / "ca.crt", token=token)

    def pids(self) -> dict[str, int]:
        return {comp.name: comp.proc.pid for comp in self.components}

    def rss_bytes(self) -> dict[str, int]:
        return {comp.name: comp.rss_bytes() for comp in self.components}

    def stop(self) -> None:
        """Stop every process and remove the working directory."""
        self._remove_workdir[0] = True
        self._finalizer()

    def __enter__(self) -> KubeCluster:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- start-up ---------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> Component:
        return spawn(self.components, self.workdir, name, argv, self.die_with_parent)

    def _https_ok(self, port: int, path: str, client: str | None = "admin") -> bool:
        return https_ok(self.pki, port, path, client)

    def start(self) -> None:
        started = time.monotonic()
        make_pki(self.pki)
        for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok"):
            self.ports[name] = free_port()
        pki, bins, ports = self.pki, self.binaries, self.ports
        for name, cert in (
            ("controller-manager", "controller-manager"),
            ("scheduler", "scheduler"),
        ):
            write_kubeconfig(
                self.workdir / f"{name}.kubeconfig",
                self.server,
                pki / "ca.crt",
                pki / f"{cert}.crt",
                pki / f"{cert}.key",
            )
        write_kubeconfig(
            self.workdir / "kwok.kubeconfig", self.server, pki / "ca.crt",
            pki / "kwok.crt", pki / "kwok.key",
        )  # fmt: skip
        write_kubeconfig(
            self.kubeconfig, self.server, pki / "ca.crt", pki / "admin.crt", pki / "admin.key"
        )

        etcd_url = f"https://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        etcd = self._spawn("etcd", [
            bins.path("etcd"),
            "--name=steadfast",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=steadfast={peer_url}",
            f"--cert-file={pki / 'etcd-server.crt'}",
            f"--key-file={pki / 'etcd-server.key'}",
            f"--trusted-ca-file={pki / 'ca.crt'}",
            "--client-cert-auth=true",
            # A throwaway store: durability costs start-up and test time for nothing.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ])  # fmt: skip
        wait_ready(
            etcd,
            lambda: self._https_ok(ports["etcd"], "/health", "apiserver-etcd-client"),
            timeout=30,
        )

        apiserver = self._spawn("kube-apiserver", [
            bins.path("kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--etcd-cafile={pki / 'ca.crt'}",
            f"--etcd-certfile={pki / 'apiserver-etcd-client.crt'}",
            f"--etcd-keyfile={pki / 'apiserver-etcd-client.key'}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            # A real node's name resolves nowhere; its InternalIP is an address the test made.
            "--kubelet-preferred-address-types=InternalIP",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The `kubernetes` Endpoints may not hold a loopback address, and nothing
            # in the cluster dials the apiserver through its Service.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
        ])  # fmt: skip
        wait_ready(apiserver, lambda: self._https_ok(ports["apiserver"], "/readyz"), timeout=90)

        kcm = self._spawn("kube-controller-manager", [
            bins.path("kube-controller-manager"),
            f"--kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['controller-manager']}",
            f"--tls-cert-file={pki / 'controller-manager.crt'}",
            f"--tls-private-key-file={pki / 'controller-manager.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false",
        ])  # fmt: skip
        scheduler = self._spawn("kube-scheduler", [
            bins.path("kube-scheduler"),
            f"--kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}",
            f"--tls-cert-file={pki / 'scheduler.crt'}",
            f"--tls-private-key-file={pki / 'scheduler.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--leader-elect=false",
        ])  # fmt: skip
        # An empty config file stops kwok from reading the user's ~/.kwok/kwok.yaml;
        # with no stages configured it uses its built-in fast node and pod stages.
        (self.workdir / "kwok.yaml").write_text("")
        kwok = self._spawn("kwok", [
            bins.path("kwok"),
            f"--config={self.workdir / 'kwok.yaml'}",
            f"--kubeconfig={self.workdir / 'kwok.kubeconfig'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--server-address=127.0.0.1:{ports['kwok']}",
            f"--node-port={ports['kwok']}",
            f"--tls-cert-file={pki / 'kwok.crt'}",
            f"--tls-private-key-file={pki / 'kwok.key'}",
        ])  # fmt: skip
        wait_ready(kcm, lambda: self._https_ok(ports["controller-manager"], "/healthz"), 60)
        wait_ready(scheduler, lambda: self._https_ok(ports["scheduler"], "/healthz"), 60)
        wait_ready(kwok, lambda: self._https_ok(ports["kwok"], "/healthz", None), 60)

        self.kubectl("apply", "-f", "-", input=json.dumps(self._node_list()))
        wait_ready(
            kwok,
            lambda: self.kubectl(
                "wait", "--for=condition=Ready", "nodes", "--all", "--timeout=5s", check=False
            ).returncode == 0,
            timeout=60,
        )  # fmt: skip
        # Pods are refused until the namespace's default ServiceAccount exists.
        wait_ready(
            kcm,
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
            timeout=60,
        )
        self.startup_seconds = time.monotonic() - started

    def _node_list(self) -> dict[str, Any]:
        items = []
        for index in range(self.nodes):
            name = f"kwok-node-{index}"
            items.append({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                    "labels": {
                        "type": "kwok",
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                    },
                },
                "status": {
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                },
            })  # fmt: skip
        return {"apiVersion": "v1", "kind": "List", "items": items}


def start_cluster(
    nodes: int = 2,
    workdir: Path | None = None,
    binaries: KubeBinaries | None = None,
    die_with_parent: bool = True,
    attempts: int = 3,
) -> KubeCluster:
    """Start a control plane with ``nodes`` fake Nodes and wait until it is usable.

    ``workdir`` (certificates, etcd data, logs, kubeconfigs) defaults to a new
    temporary directory; it is removed on ``stop()`` but kept when start-up fails,
    so its logs can be read. ``die_with_parent`` ties every component's life to the
    calling thread: start the cluster from a thread that outlives it.
    """
    bins = binaries or KubeBinaries.locate()
    sweep_stale_workdirs()
    for attempt in range(1, attempts + 1):
        root = workdir or Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
        if workdir is not None and workdir.exists():
            shutil.rmtree(workdir)
        root.mkdir(parents=True, exist_ok=True)
        (root / "owner.pid").write_text(f"{os.getpid()}\n")
        cluster = KubeCluster(root, bins, nodes=nodes, die_with_parent=die_with_parent)
        try:
            cluster.start()
            return cluster
        except BaseException as exc:
            # Keep the logs of the failed attempt but no process.
            terminate(cluster.components)
            if isinstance(exc, ClusterStartError) and exc.port_clash and attempt < attempts:
                continue
            raise
    raise AssertionError("unreachable")

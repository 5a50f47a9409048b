"""A real Kubernetes control plane on loopback, for the e2e tests and ``hack/cluster``.

DESIGN §6: the tests talk to the real thing. This module starts etcd,
kube-apiserver (TLS, RBAC, service-account signing keys), kube-controller-manager,
kube-scheduler and kwok (which plays the kubelets of N fake Nodes), all built by
``hack/k8s-binaries``, on free 127.0.0.1 ports with certificates minted for this one
cluster. Every process runs in its own process group and dies with its parent, so
a failed or killed test run leaves nothing behind.

Only the standard library and the ``openssl`` CLI are used, so ``hack/cluster`` can
run it before the project's venv exists.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
K8S_BINARIES_SCRIPT = REPO / "hack" / "k8s-binaries"
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
    "helm",
)
#: kwok manages only Nodes carrying this annotation, so it never touches real ones.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
TMP_PREFIX = "steadfast-kube-"


class ClusterStartError(RuntimeError):
    """The control plane did not come up; the message carries the failing log's tail."""

    def __init__(self, message: str, port_clash: bool = False) -> None:
        super().__init__(message)
        #: A listener lost a race for its port; starting again with new ports may work.
        self.port_clash = port_clash


@dataclass(frozen=True)
class KubeBinaries:
    """Where the binaries built by ``hack/k8s-binaries`` live."""

    bin_dir: Path

    def path(self, name: str) -> str:
        return str(self.bin_dir / name)

    @classmethod
    def locate(cls) -> KubeBinaries:
        """``$STEADFAST_K8S_BIN``, else the cache dir the build script reports."""
        configured = os.environ.get("STEADFAST_K8S_BIN")
        if configured:
            bin_dir = Path(configured)
        else:
            out = subprocess.run(
                [str(K8S_BINARIES_SCRIPT), "--print-bin-dir"],
                capture_output=True,
                text=True,
                check=True,
            )
            bin_dir = Path(out.stdout.strip())
        missing = [name for name in BINARIES if not os.access(bin_dir / name, os.X_OK)]
        if missing:
            raise FileNotFoundError(
                f"Kubernetes binaries missing in {bin_dir}: {', '.join(missing)}; "
                "build them with `hack/k8s-binaries` (or `make k8s-binaries`)"
            )
        return cls(bin_dir)


def pinned_versions() -> dict[str, str]:
    """The versions ``hack/k8s-binaries`` pins, e.g. ``{"kubernetes": "v1.34.4", ...}``."""
    out = subprocess.run(
        [str(K8S_BINARIES_SCRIPT), "--versions"], capture_output=True, text=True, check=True
    )
    versions: dict[str, str] = json.loads(out.stdout)
    return versions


# --- certificates --------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterStartError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _new_key(pki: Path, name: str) -> None:
    # P-256 keys take milliseconds where RSA takes a noticeable fraction of a second.
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-out", f"{name}.key", cwd=pki,
    )  # fmt: skip


def _issue(pki: Path, name: str, subject: str, sans: Sequence[str] = ()) -> None:
    """A leaf certificate signed by this cluster's CA, good for server and client use."""
    _new_key(pki, name)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=pki)
    ext = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=serverAuth,clientAuth",
    ]
    if sans:
        ext.append("subjectAltName=" + ",".join(sans))
    (pki / f"{name}.ext").write_text("\n".join(ext) + "\n")
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-set_serial", "0x" + secrets.token_hex(16), "-days", "7", "-sha256",
        "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        cwd=pki,
    )  # fmt: skip


SERVER_SANS = (
    "IP:127.0.0.1",
    "DNS:localhost",
    # The in-cluster names and the first service IP, so the certificate is valid for
    # what the cluster itself advertises (nothing here dials them).
    "IP:10.96.0.1",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


def make_pki(pki: Path) -> None:
    """A fresh CA, serving and client certificates, and the service-account key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    _new_key(pki, "ca")
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=steadfast-test-ca",
        "-days", "7", "-sha256", "-out", "ca.crt",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=pki,
    )  # fmt: skip
    _issue(pki, "etcd-server", "/CN=etcd", SERVER_SANS)
    _issue(pki, "apiserver-etcd-client", "/CN=kube-apiserver-etcd-client")
    _issue(pki, "apiserver", "/CN=kube-apiserver", SERVER_SANS)
    _issue(pki, "admin", "/O=system:masters/CN=steadfast-admin")
    _issue(pki, "controller-manager", "/CN=system:kube-controller-manager", SERVER_SANS)
    _issue(pki, "scheduler", "/CN=system:kube-scheduler", SERVER_SANS)
    # kwok stands in for every kubelet; it updates Node and Pod status of all nodes,
    # which no single system:node identity may do, so it gets cluster-admin.
    _issue(pki, "kwok", "/O=system:masters/CN=kwok", SERVER_SANS)
    _new_key(pki, "sa")
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def write_kubeconfig(
    path: Path, server: str, ca: Path, cert: Path | None = None, key: Path | None = None,
    token: str | None = None,
) -> Path:  # fmt: skip
    """A kubeconfig with the credentials embedded, so it stays valid when copied."""
    user: dict[str, str] = {}
    if cert is not None and key is not None:
        user["client-certificate-data"] = _b64(cert.read_bytes())
        user["client-key-data"] = _b64(key.read_bytes())
    if token is not None:
        user["token"] = token
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "steadfast",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca.read_bytes())},
            }
        ],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "steadfast", "context": {"cluster": "steadfast", "user": "user"}}],
        "current-context": "steadfast",
    }
    # JSON is YAML, and every kubeconfig loader reads it.
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- processes -----------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the test process is killed outright
    # (SIGKILL, OOM), the kernel ends this component too, so nothing is left behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class Component:
    """One running binary of the control plane."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def rss_bytes(self) -> int:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


def _terminate(components: list[Component], grace: float = 15.0) -> None:
    """SIGTERM every process group, then SIGKILL what outlives the grace period."""
    for comp in reversed(components):
        if comp.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(comp.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for comp in reversed(components):
        with contextlib.suppress(subprocess.TimeoutExpired):
            comp.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        # Also reaps whatever the component may have forked into its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(comp.proc.pid, signal.SIGKILL)
        comp.proc.wait()
    components.clear()


def _cleanup(components: list[Component], workdir: Path, remove: list[bool]) -> None:
    _terminate(components)
    if remove[0]:
        shutil.rmtree(workdir, ignore_errors=True)


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
            self, _cleanup, self.components, self.workdir, self._remove_workdir
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
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        log = logs / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.workdir, start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )  # fmt: skip
        comp = Component(name, proc, log)
        self.components.append(comp)
        return comp

    def _wait(self, comp: Component, ready: Callable[[], bool], timeout: float) -> None:
        """Poll ``ready`` until true; fail early, with the log, if the process dies."""
        deadline = time.monotonic() + timeout
        while True:
            if comp.proc.poll() is not None:
                tail = comp.tail()
                raise ClusterStartError(
                    f"{comp.name} exited with {comp.proc.returncode} during start-up; "
                    f"log {comp.log}:\n{tail}",
                    port_clash="address already in use" in tail,
                )
            try:
                if ready():
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"{comp.name} not ready after {timeout:.0f}s; log {comp.log}:\n{comp.tail()}"
                )
            time.sleep(0.2)

    def _https_ok(self, port: int, path: str, client: str | None = "admin") -> bool:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if client is not None:
            ctx.load_cert_chain(self.pki / f"{client}.crt", self.pki / f"{client}.key")
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{port}{path}", context=ctx, timeout=5
            ) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError:
            return False

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
        self._wait(
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
        self._wait(apiserver, lambda: self._https_ok(ports["apiserver"], "/readyz"), timeout=90)

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
        self._wait(kcm, lambda: self._https_ok(ports["controller-manager"], "/healthz"), 60)
        self._wait(scheduler, lambda: self._https_ok(ports["scheduler"], "/healthz"), 60)
        self._wait(kwok, lambda: self._https_ok(ports["kwok"], "/healthz", None), 60)

        self.kubectl("apply", "-f", "-", input=json.dumps(self._node_list()))
        self._wait(
            kwok,
            lambda: self.kubectl(
                "wait", "--for=condition=Ready", "nodes", "--all", "--timeout=5s", check=False
            ).returncode == 0,
            timeout=60,
        )  # fmt: skip
        # Pods are refused until the namespace's default ServiceAccount exists.
        self._wait(
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_workdirs() -> list[Path]:
    """Remove the temporary dirs of clusters whose owner was killed before cleaning up.

    Their processes died with the owner (see ``_die_with_parent``); only files remain.
    """
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*"):
        try:
            owner = int((path / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if not _pid_alive(owner):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


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
            _terminate(cluster.components)
            if isinstance(exc, ClusterStartError) and exc.port_clash and attempt < attempts:
                continue
            raise
    raise AssertionError("unreachable")

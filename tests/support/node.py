"""A real node for the loopback control plane: kubelet, containerd, runc and a CNI bridge.

Why it exists: kwok plays every other kubelet, so nothing there runs a container. The
real-pod tier (``tests/pods``) needs pods that are processes in their own network
namespaces, started from the images ``hack/build-images`` built, under the security
context the chart and the operator render. docs/design.md §7 lists what it took on
these machines (cgroup v1, an OOM-score restriction, a local pause image, a node
address that is not loopback); hack/README.md draws the network.

The layout (one node, one bridge, nothing routed anywhere else)::

    host netns                                      pod netns (one per pod)
    ─────────────────────────────────────────       ─────────────────────
    127.0.0.1      apiserver, Temporal, simulator,
                   Postgres, SMTP (as always)
    sfnode0 10.244.0.1/24  ◀── veth ──────────────▶ eth0 10.244.0.x/24
      kubelet :10250 (apiserver → logs, exec)       no default route: a pod reaches
      forwarders 10.244.0.1:P → 127.0.0.1:P         10.244.0.0/24 and nothing else

The kubelet registers as ``steadfast-node`` (label ``steadfast.dev/real-node=true``),
without kwok's annotation, so kwok never claims it. Everything the node writes lives
in one temporary directory, except what containerd 1.6 and CNI keep in fixed places
(network namespaces in /run/netns, the ``kubepods`` cgroups), which ``stop()`` removes
or leaves empty. Standard library only, like ``tests.support.kube``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.kube import KubeCluster
from tests.support.kube_binaries import REPO
from tests.support.kube_pki import issue, write_kubeconfig
from tests.support.kube_procs import ClusterStartError, Component, spawn, terminate, wait_ready
from tests.support.ports import free_port

NODE_NAME = "steadfast-node"
NODE_LABEL = "steadfast.dev/real-node"
BRIDGE = "sfnode0"
#: The node's own address: the bridge's gateway. Servers pods must reach listen here too.
NODE_IP = "10.244.0.1"
POD_CIDR = "10.244.0.0/24"
CNI_BIN_DIR = "/usr/lib/cni"
IMAGES_SCRIPT = REPO / "hack" / "build-images"
#: What `scripts/bootstrap --all` installs for this node.
HOST_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip")


def containerd_root() -> Path:
    """containerd's image store and snapshots, kept between runs so a warm start imports
    nothing; its state (sockets, running tasks) is per run, in the node's workdir."""
    configured = os.environ.get("STEADFAST_NODE_CACHE")
    base = Path(configured) if configured else Path.home() / ".cache" / "steadfast" / "node"
    return base.expanduser().resolve() / "containerd"


class NodeUnavailableError(RuntimeError):
    """Something the node needs is not on this machine; the message names it."""


def built_images() -> dict[str, dict[str, Any]]:
    """The index ``hack/build-images`` wrote: name -> ref, archive, bytes (builds if needed)."""
    proc = subprocess.run([str(IMAGES_SCRIPT)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise NodeUnavailableError(f"hack/build-images failed:\n{proc.stderr[-4000:]}")
    index: dict[str, dict[str, Any]] = json.loads(Path(proc.stdout.strip()).read_text())
    return index


def _run(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise ClusterStartError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc


@dataclass
class RealNode:
    """A kubelet with containerd on a bridge of its own; ``start()``, then ``stop()``."""

    cluster: KubeCluster
    images: dict[str, dict[str, Any]]
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sfnode-")))
    components: list[Component] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    kubelet_port: int = 10250

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd.sock"

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return _run("ctr", "--address", str(self.socket), "-n", "k8s.io", *args, timeout=timeout)

    # --- start ------------------------------------------------------------------------

    def start(self) -> None:
        missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
        if not os.access(f"{CNI_BIN_DIR}/bridge", os.X_OK):
            missing.append(f"{CNI_BIN_DIR}/bridge (containernetworking-plugins)")
        if not os.access(self.cluster.binaries.bin_dir / "kubelet", os.X_OK):
            missing.append("kubelet (hack/k8s-binaries)")
        if os.geteuid() != 0:
            missing.append("root")
        if missing:
            raise NodeUnavailableError(f"a real node needs {', '.join(missing)}")
        started = time.monotonic()
        # One real node per machine: the bridge, its address and the kept image store are
        # machine-wide. A second session waits here instead of tearing the first one's down.
        containerd_root().mkdir(parents=True, exist_ok=True)
        self._lock = open(containerd_root().parent / "node.lock", "w")  # noqa: SIM115
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self._bridge()
        self._containerd()
        self.timings["containerd"] = time.monotonic() - started
        mark = time.monotonic()
        self._forget_old_containers()
        present = set(self.ctr("images", "ls", "-q").stdout.split())
        wanted = {image["ref"] for image in self.images.values()}
        for ref in present - wanted:
            # Images of earlier inputs (and their digest aliases) only take space.
            if ref.startswith("localhost/steadfast/"):
                self.ctr("images", "rm", ref)
        for name in ("pause", "worker", "operator"):
            if self.images[name]["ref"] not in present:
                self.ctr("images", "import", self.images[name]["archive"])
        self.timings["image_import"] = time.monotonic() - mark
        mark = time.monotonic()
        self._kubelet()
        self.timings["kubelet"] = time.monotonic() - mark
        self.timings["total"] = time.monotonic() - started

    def _forget_old_containers(self) -> None:
        # A run killed before stop() leaves its containers in the kept store; their
        # processes died with that run, so only the records (and snapshots) are left.
        for container in self.ctr("containers", "ls", "-q").stdout.split():
            _run("ctr", "--address", str(self.socket), "-n", "k8s.io", "containers", "delete",
                 container, check=False)  # fmt: skip

    def _bridge(self) -> None:
        # Created here, before the kubelet, because the kubelet checks its node IP is on
        # an interface; the CNI bridge plugin then adopts it. A bridge left by a killed run
        # is ours (same name), so it is replaced.
        _run("ip", "link", "del", BRIDGE, check=False)
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        self._netns_before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()

    def _containerd(self) -> None:
        cni_conf = self.workdir / "cni"
        cni_conf.mkdir()
        (cni_conf / "10-steadfast.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0",
            "name": "steadfast",
            "plugins": [{
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                # No routes: a pod reaches the bridge's subnet and nothing beyond it.
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "dataDir": str(self.workdir / "cni-ipam"),
                },
            }, {"type": "loopback"}],
        }, indent=2))  # fmt: skip
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{containerd_root()}"
state = "{self.workdir / "containerd-state"}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.workdir / "containerd.ttrpc.sock"}"
[{cri}]
  sandbox_image = "{self.images["pause"]["ref"]}"
  # Lowering oom_score_adj is refused on these machines; without this every sandbox
  # dies with runc's "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  enable_selinux = false
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{cni_conf}"
  max_conf_num = 1
"""
        (self.workdir / "containerd.toml").write_text(config)
        proc = spawn(self.components, self.workdir, "containerd", [
            "containerd", "--config", str(self.workdir / "containerd.toml"), "--log-level", "warn",
        ], die_with_parent=False)  # fmt: skip
        wait_ready(
            proc,
            lambda: (
                _run("ctr", "--address", str(self.socket), "version", check=False).returncode == 0
            ),
            timeout=60,
        )

    def _kubelet(self) -> None:
        pki = self.cluster.pki
        issue(pki, "kubelet-client", f"/O=system:nodes/CN=system:node:{NODE_NAME}")
        issue(pki, "kubelet-serving", f"/CN={NODE_NAME}", (f"IP:{NODE_IP}", f"DNS:{NODE_NAME}"))
        kubeconfig = write_kubeconfig(
            self.workdir / "kubelet.kubeconfig", self.cluster.server, pki / "ca.crt",
            pki / "kubelet-client.crt", pki / "kubelet-client.key",
        )  # fmt: skip
        healthz = free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # The apiserver dials the kubelet (logs, exec) at the node address only.
            "address": NODE_IP,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            "tlsCertFile": str(pki / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            # These machines run cgroup v1 (hybrid) without systemd as init.
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            # No DNS server anywhere a pod could reach, and none of the host's resolvers.
            "resolvConf": "",
            "clusterDNS": [],
            "maxPods": 30,
            "podCIDR": POD_CIDR,
            "registerNode": True,
            # A shared test machine's disk is no reason to evict a test's pods.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "nodeStatusUpdateFrequency": "4s",
            "volumePluginDir": str(self.workdir / "volume-plugins"),
            "logging": {"verbosity": 1},
        }  # fmt: skip
        (self.workdir / "kubelet.yaml").write_text(json.dumps(config, indent=2))
        kubelet = spawn(self.components, self.workdir, "kubelet", [
            str(self.cluster.binaries.bin_dir / "kubelet"),
            f"--config={self.workdir / 'kubelet.yaml'}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.workdir / 'kubelet'}",
            f"--cert-dir={self.workdir / 'kubelet-pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            f"--node-labels={NODE_LABEL}=true",
        ], die_with_parent=False)  # fmt: skip

        def ready() -> bool:
            proc = self.cluster.kubectl(
                "get", "node", NODE_NAME, "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False,
            )  # fmt: skip
            return proc.stdout.strip() == "True"

        wait_ready(kubelet, ready, timeout=120)

    # --- stop -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every pod, the kubelet and containerd; remove the bridge and the workdir."""
        with contextlib.suppress(Exception):
            # Deleting the pods lets the kubelet tear their networks down through CNI.
            self.cluster.kubectl(
                "delete", "pods", "--all-namespaces", "--all", "--grace-period=0", "--force",
                f"--field-selector=spec.nodeName={NODE_NAME}", "--wait=false", check=False,
                timeout=30,
            )  # fmt: skip
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self._pods_running():
                time.sleep(1)
        kubelet = [c for c in self.components if c.name == "kubelet"]
        terminate(kubelet)
        self._kill_tasks()
        shims = self._shim_pids()
        terminate([c for c in self.components if c.name != "kubelet"])
        for pid in shims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.components.clear()
        self._remove_netns()
        _run("ip", "link", "del", BRIDGE, check=False)
        self._unmount_all()
        shutil.rmtree(self.workdir, ignore_errors=True)
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.close()

    def _pods_running(self) -> bool:
        proc = self.ctr("tasks", "ls", "-q") if self.socket.exists() else None
        return bool(proc and proc.stdout.strip())

    def _kill_tasks(self) -> None:
        if not self.socket.exists():
            return
        with contextlib.suppress(Exception):
            for task in self.ctr("tasks", "ls", "-q").stdout.split():
                _run("ctr", "--address", str(self.socket), "-n", "k8s.io", "tasks", "kill",
                     "-a", "-s", "SIGKILL", task, check=False)  # fmt: skip

    def _shim_pids(self) -> list[int]:
        # Each container's shim outlives containerd by design; ours name our socket.
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if (
                    argv[0].endswith(b"containerd-shim-runc-v2")
                    and str(self.socket).encode() in argv
                ):
                    pids.append(int(proc.name))
        return pids

    def _remove_netns(self) -> None:
        if not os.path.isdir("/run/netns"):
            return
        for name in set(os.listdir("/run/netns")) - getattr(self, "_netns_before", set()):
            if name.startswith("cni-"):
                _run("ip", "netns", "del", name, check=False)

    def _unmount_all(self) -> None:
        # The kubelet's volumes (tmpfs for Secrets, projected tokens) and containerd's
        # overlay and shm mounts live under the workdir; unmount them deepest first.
        prefix = str(self.workdir) + "/"
        with open("/proc/self/mounts") as mounts:
            points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
        for point in sorted(points, key=len, reverse=True):
            _run("umount", "-l", point, check=False)

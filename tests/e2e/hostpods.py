"""A stand-in kubelet for kwok: one host ``steadfast worker`` process per worker pod.

kwok plays the kubelet of its fake Nodes but runs nothing, and when a pod is
deleted it removes the object at once. The tests that are about what happens to a
worker *process* when Kubernetes stops its pod (a scale-down, a rollout) need the
kubelet's side of that contract, so :class:`HostKubelet` provides it for the pods
of one agent's Deployment:

* a pod bound to a Node gets a worker process, configured as the pod would be:
  the ConfigMap its ``config`` volume names, its own ``env`` (``secretKeyRef``
  read from the Secret), its mounted Secrets, its own home directory (an
  ``emptyDir`` is per pod); only host-local paths and ports are changed;
* a pod that is deleted (or has a ``deletionTimestamp``) gets what a kubelet
  gives its container: SIGTERM, then SIGKILL once the pod's grace period has
  passed (a non-zero ``metadata.deletionGracePeriodSeconds`` when seen, else the
  pod's ``spec.terminationGracePeriodSeconds``), counted from when the deletion
  was seen.

Assumptions a port to real pods (issue 11: a real kubelet next to the kwok
nodes) must keep or replace, each stated where it is used:

1. The pod's object is gone at once under kwok, while a real kubelet keeps it
   Terminating until the container exits; the tests look at processes and at the
   simulator's log, never at Terminating pods.
2. The deletion is seen by polling every ``poll`` seconds (0.5 s), so SIGTERM is
   up to that late; the SIGKILL deadline is measured from the same moment.
3. No preStop hook exists in the rendered pod, so SIGTERM is the first signal.
4. Readiness and liveness probes are not run: kwok reports the pod Ready itself. With
   ``metrics=True`` each worker serves its metrics port on a host port of its own, and
   :meth:`HostKubelet.readiness` asks it what the pod's ``httpGet`` readiness probe
   would (the probe's path, on the port standing in for the container port it names,
   which must be the port the pod's configuration serves), for the test to read.
"""

from __future__ import annotations

import base64
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from tests.e2e.operator_env import get, mount_secrets
from tests.support.kube import KubeCluster
from tests.support.ports import free_port

from steadfast_dev.processes import Child, Supervisor, steadfast_command


@dataclass
class PodRecord:
    """One pod's worker process and what happened to it, for the test to check."""

    pod: str
    child: Child
    grace_seconds: float
    started_at: float = field(default_factory=time.time)
    sigterm_at: float | None = None
    kill_deadline: float | None = None
    sigkill_at: float | None = None
    exited_at: float | None = None
    returncode: int | None = None
    #: With ``metrics``: where the pod's readiness probe asks (URL on the host), if it has one.
    readiness_url: str = ""

    @property
    def drained_seconds(self) -> float | None:
        """How long the process ran after SIGTERM (None if it never got one or still runs)."""
        if self.sigterm_at is None or self.exited_at is None:
            return None
        return self.exited_at - self.sigterm_at


def volumes_mount(container: dict[str, Any], volume: str) -> str:
    """Where ``container`` mounts ``volume``."""
    (path,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume]
    return str(path).rstrip("/")


class HostKubelet:
    """Runs and stops a host worker process per pod of ``agent``'s worker Deployment."""

    def __init__(
        self,
        cluster: KubeCluster,
        namespace: str,
        agent: str,
        root: Path,
        poll: float = 0.5,
        *,
        metrics: bool = False,
    ) -> None:
        self.cluster, self.namespace, self.agent, self.root = cluster, namespace, agent, root
        self.poll, self.metrics = poll, metrics
        self.records: dict[str, PodRecord] = {}
        self.errors: list[str] = []
        self._supervisor = Supervisor(root / "logs")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"kubelet-{agent}", daemon=True)

    # --- the loop -----------------------------------------------------------------

    def start(self) -> HostKubelet:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as err:  # a test reads the errors; the loop must go on
                self.errors.append(repr(err))
            self._stop.wait(self.poll)

    def _pods(self) -> list[dict[str, Any]]:
        items = self.cluster.kubectl_json(
            "get", "pods", "-n", self.namespace, "-l", f"steadfast.dev/agent={self.agent}"
        )["items"]
        return list(items)

    def _sync(self) -> None:
        now = time.time()
        live: dict[str, dict[str, Any]] = {}
        for pod in self._pods():
            name = pod["metadata"]["name"]
            deleting = pod["metadata"].get("deletionTimestamp")
            if deleting:
                rec = self.records.get(name)
                grace = pod["metadata"].get("deletionGracePeriodSeconds")
                # kwok removes a deleted pod with a grace of 0, as a kubelet would only
                # once the container has exited: only the deletion's own grace counts.
                if rec is not None and grace and rec.sigterm_at is None:
                    rec.grace_seconds = float(grace)
                continue
            if pod["spec"].get("nodeName"):
                live[name] = pod
        for name, pod in live.items():
            if name not in self.records:
                self.records[name] = self._run(pod)
        for name, rec in self.records.items():
            self._reap(rec)
            if rec.exited_at is not None:
                continue
            if name not in live and rec.sigterm_at is None:
                # What a kubelet does for a deleted pod without a preStop hook.
                rec.child.signal_group(signal.SIGTERM)
                rec.sigterm_at = now
                rec.kill_deadline = now + rec.grace_seconds
            elif rec.kill_deadline is not None and now >= rec.kill_deadline:
                rec.child.signal_group(signal.SIGKILL)
                rec.sigkill_at = now

    @staticmethod
    def _reap(rec: PodRecord) -> None:
        if rec.exited_at is None and not rec.child.alive():
            rec.exited_at = time.time()
            rec.returncode = rec.child.popen.returncode

    # --- one pod --------------------------------------------------------------------

    def _run(self, pod: dict[str, Any]) -> PodRecord:
        """Start the worker the pod's container describes, with host-local paths and ports."""
        name = pod["metadata"]["name"]
        spec = pod["spec"]
        container = spec["containers"][0]
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        cm_name = volumes["config"]["configMap"]["name"]
        cm = get(self.cluster, "cm", self.namespace, cm_name)
        assert cm is not None, f"pod {name} mounts ConfigMap {cm_name}, which is missing"
        config = yaml.safe_load(cm["data"]["worker.yaml"])
        home = self.root / name
        home.mkdir(parents=True, exist_ok=True)
        serves = config["worker"].get("metricsPort")
        config["worker"]["metricsPort"] = free_port() if self.metrics else 0
        config["worker"]["metricsHost"] = "127.0.0.1"
        config["worker"]["sdkMetricsPort"] = 0
        url = ""
        probe = (container.get("readinessProbe") or {}).get("httpGet")
        if self.metrics and probe:
            named = {p["name"]: p["containerPort"] for p in container.get("ports") or []}
            asked = named.get(probe["port"], probe["port"])
            assert asked == serves, (
                f"pod {name}'s readiness probe asks port {asked}, its worker serves {serves}"
            )
            url = f"http://127.0.0.1:{config['worker']['metricsPort']}{probe['path']}"
        mount_secrets(
            self.cluster, self.namespace, {"spec": {"template": pod}}, config, home / "mounts"
        )
        path = home / "worker.yaml"
        path.write_text(yaml.safe_dump(config))
        env = self.cluster.env()
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
            elif "secretKeyRef" in (var.get("valueFrom") or {}):
                ref = var["valueFrom"]["secretKeyRef"]
                sec = get(self.cluster, "secret", self.namespace, ref["name"])
                assert sec is not None, f"pod {name} reads Secret {ref['name']}, which is missing"
                env[var["name"]] = base64.b64decode(sec["data"][ref["key"]]).decode()
        env["HOME"] = str(home)  # the pod's HOME is its own /tmp emptyDir
        # The container's own arguments, its configuration file moved to the host copy.
        mounted = f"{volumes_mount(container, 'config')}/worker.yaml"
        args = [str(path) if arg == mounted else arg for arg in container["args"]]
        argv = steadfast_command(*args)
        child = self._supervisor.spawn(name, argv, env=env)
        grace = float(spec.get("terminationGracePeriodSeconds", 30))
        return PodRecord(name, child, grace, readiness_url=url)

    # --- for the test ---------------------------------------------------------------

    @staticmethod
    def readiness(rec: PodRecord) -> tuple[int, str] | None:
        """What the pod's readiness probe gets from its worker: status and first line
        (None while nothing answers, or without ``metrics``)."""
        if not rec.readiness_url:
            return None
        try:
            response = httpx.get(rec.readiness_url, timeout=2)
        except httpx.TransportError:
            return None
        return response.status_code, response.text.strip()[:80]

    def running(self) -> list[PodRecord]:
        return [r for r in self.records.values() if r.sigterm_at is None and r.child.alive()]

    def stopped(self) -> list[PodRecord]:
        """Pods Kubernetes stopped (SIGTERM sent), whether or not they have exited yet."""
        return [r for r in self.records.values() if r.sigterm_at is not None]

    def close(self) -> None:
        """Stop the loop and every process left (the test is over: not a kubelet's doing)."""
        self._stop.set()
        self._thread.join(timeout=10)
        for rec in self.records.values():
            self._reap(rec)
        self._supervisor.stop_all(grace=5)
        for rec in self.records.values():
            self._reap(rec)

    def __enter__(self) -> HostKubelet:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

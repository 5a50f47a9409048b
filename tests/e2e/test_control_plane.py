"""The loopback control plane is a real one: controllers, scheduler, RBAC, CEL, Helm.

These guard the harness every other e2e test stands on (issue 3): if one fails,
the operator and chart tests would be testing a mock in disguise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from tests.support.kube import (
    REPO,
    KubeBinaries,
    KubeCluster,
    pinned_versions,
    start_cluster,
    sweep_stale_workdirs,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def running_pods(cluster: KubeCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    pods = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", selector)["items"]
    return [
        pod
        for pod in pods
        if pod["status"].get("phase") == "Running" and "deletionTimestamp" not in pod["metadata"]
    ]


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


def count_of(cluster: KubeCluster, kind: str, namespace: str, selector: str) -> int:
    return len(cluster.kubectl_json("get", kind, "-n", namespace, "-l", selector)["items"])


DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            # kwok never pulls the image; the name only has to be valid.
            "spec": {"containers": [{"name": "web", "image": "steadfast/web:1"}]},
        },
    },
}


def test_deployment_becomes_scheduled_running_pods_and_is_garbage_collected(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(DEPLOYMENT))
    deployment = kube_cluster.kubectl_json("get", "deployment", "web", "-n", namespace)

    # kwok marks a pod Running, then Ready in a later status write: wait for both.
    wait_for(
        "2 running, ready pods",
        lambda: sum(map(ready, running_pods(kube_cluster, namespace, "app=web"))) == 2,
    )
    (replicaset,) = kube_cluster.kubectl_json("get", "rs", "-n", namespace, "-l", "app=web")[
        "items"
    ]
    owner = replicaset["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("Deployment", deployment["metadata"]["uid"])
    nodes = {
        node["metadata"]["name"] for node in kube_cluster.kubectl_json("get", "nodes")["items"]
    }
    for pod in running_pods(kube_cluster, namespace, "app=web"):
        assert pod["metadata"]["ownerReferences"][0]["uid"] == replicaset["metadata"]["uid"]
        # Bound by kube-scheduler to one of kwok's Nodes, then marked Running by kwok.
        assert pod["spec"]["nodeName"] in nodes
        conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert conditions["PodScheduled"] == "True"
        assert conditions["Ready"] == "True"

    kube_cluster.kubectl("scale", "deployment/web", "--replicas=4", "-n", namespace)
    wait_for("4 running pods", lambda: len(running_pods(kube_cluster, namespace, "app=web")) == 4)
    kube_cluster.kubectl("scale", "deployment/web", "--replicas=1", "-n", namespace)
    wait_for("1 pod left", lambda: count_of(kube_cluster, "pods", namespace, "app=web") == 1)
    assert len(running_pods(kube_cluster, namespace, "app=web")) == 1

    # Only the owner is deleted; its ReplicaSet and Pods go through the garbage collector.
    kube_cluster.kubectl(
        "delete", "deployment", "web", "-n", namespace, "--cascade=background", "--wait=false"
    )
    wait_for(
        "ReplicaSet collected", lambda: count_of(kube_cluster, "rs", namespace, "app=web") == 0
    )
    wait_for("Pods collected", lambda: count_of(kube_cluster, "pods", namespace, "app=web") == 0)


def widget_crd(group: str) -> dict[str, Any]:
    bounded = {"type": "integer", "minimum": 0, "maximum": 10}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["minReplicas", "maxReplicas"],
                                    "properties": {"minReplicas": bounded, "maxReplicas": bounded},
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.minReplicas <= self.maxReplicas",
                                            "message": "minReplicas must not exceed maxReplicas",
                                            "fieldPath": ".minReplicas",
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def test_crd_with_cel_rule_is_established_and_rejects_invalid_objects(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    # CRDs are cluster-wide: a group of its own keeps reruns and other tests apart.
    group = f"{namespace}.e2e.steadfast.dev"
    crd = f"widgets.{group}"
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(widget_crd(group)))
    try:
        kube_cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        conditions = {
            c["type"]: c["status"]
            for c in kube_cluster.kubectl_json("get", "crd", crd)["status"]["conditions"]
        }
        assert conditions.get("NonStructuralSchema") is None

        def widget(name: str, low: int, high: int) -> str:
            return json.dumps(
                {
                    "apiVersion": f"{group}/v1",
                    "kind": "Widget",
                    "metadata": {"name": name},
                    "spec": {"minReplicas": low, "maxReplicas": high},
                }
            )

        kube_cluster.kubectl("create", "-n", namespace, "-f", "-", input=widget("good", 1, 3))
        assert kube_cluster.kubectl_json("get", f"{crd}", "good", "-n", namespace)["spec"] == {
            "minReplicas": 1,
            "maxReplicas": 3,
        }

        cel = kube_cluster.kubectl(
            "create", "-n", namespace, "-f", "-", input=widget("inverted", 5, 2), check=False
        )
        assert cel.returncode != 0
        assert 'spec.minReplicas: Invalid value: "object": minReplicas must not exceed' in (
            cel.stderr
        ), cel.stderr

        bounds = kube_cluster.kubectl(
            "create", "-n", namespace, "-f", "-", input=widget("huge", 1, 50), check=False
        )
        assert bounds.returncode != 0
        assert "spec.maxReplicas: Invalid value: 50" in bounds.stderr, bounds.stderr
        assert "less than or equal to 10" in bounds.stderr, bounds.stderr
    finally:
        kube_cluster.kubectl("delete", "crd", crd, "--wait=false", check=False)


def write_chart(root: Path, kube_version: str) -> Path:
    chart = root / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: tiny\nversion: 0.1.0\nappVersion: '1.0'\n"
        f"kubeVersion: '{kube_version}'\n"
    )
    (chart / "values.yaml").write_text("greeting: hello\nreplicas: 1\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
        "  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )
    (chart / "templates" / "deployment.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n"
        "spec:\n  replicas: {{ .Values.replicas }}\n"
        "  selector:\n    matchLabels: {app: {{ .Release.Name }}}\n"
        "  template:\n    metadata:\n      labels: {app: {{ .Release.Name }}}\n"
        "    spec:\n      containers: [{name: app, image: 'steadfast/tiny:1'}]\n"
    )
    return chart


def test_helm_installs_a_chart_and_sees_the_real_kubernetes_version(
    kube_cluster: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    kube = pinned_versions()["kubernetes"]
    minor = kube.split(".")[1]
    chart = write_chart(tmp_path / "ok", f">=1.{minor}.0-0 <1.{int(minor) + 1}.0-0")

    kube_cluster.helm(
        "install", "tiny", str(chart), "-n", namespace, "--set", "greeting=hi",
        "--wait", "--timeout", "120s",
    )  # fmt: skip
    status = json.loads(kube_cluster.helm("status", "tiny", "-n", namespace, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    config = kube_cluster.kubectl_json("get", "configmap", "tiny-config", "-n", namespace)
    assert config["data"] == {"greeting": "hi", "kubeVersion": kube}
    deployment = kube_cluster.kubectl_json("get", "deployment", "tiny", "-n", namespace)
    assert deployment["status"].get("availableReplicas") == 1

    kube_cluster.helm("uninstall", "tiny", "-n", namespace, "--wait", "--timeout", "60s")
    gone = kube_cluster.kubectl("get", "configmap", "tiny-config", "-n", namespace, check=False)
    assert "NotFound" in gone.stderr

    # Helm's kubeVersion gate reads the apiserver's stamped version: a chart for an
    # older Kubernetes is refused, which an unstamped v0.0.0 server would not show.
    old = write_chart(tmp_path / "old", "<1.20.0-0")
    refused = kube_cluster.helm("install", "old", str(old), "-n", namespace, check=False)
    assert refused.returncode != 0
    assert f"incompatible with Kubernetes {kube}" in refused.stderr, refused.stderr


def test_kubectl_helm_etcd_and_kwok_report_the_pinned_versions(
    kube_cluster: KubeCluster,
) -> None:
    pins = pinned_versions()
    versions = json.loads(kube_cluster.kubectl("version", "-o", "json").stdout)
    assert versions["clientVersion"]["gitVersion"] == pins["kubernetes"]
    assert versions["serverVersion"]["gitVersion"] == pins["kubernetes"]
    major, minor = pins["kubernetes"].lstrip("v").split(".")[:2]
    assert (versions["serverVersion"]["major"], versions["serverVersion"]["minor"]) == (
        major,
        minor,
    )

    helm = kube_cluster.helm("version", "--template", "{{.Version}}").stdout.strip()
    assert helm == pins["helm"]
    etcd = kube_cluster.run("etcd", "--version").stdout
    assert f"etcd Version: {pins['etcd'].lstrip('v')}" in etcd
    kwok = kube_cluster.run("kwok", "--version").stdout
    assert pins["kwok"] in kwok


def test_every_listener_is_on_loopback(kube_cluster: KubeCluster) -> None:
    listening: dict[str, list[str]] = {}
    for name, pid in kube_cluster.pids().items():
        sockets = psutil.Process(pid).net_connections(kind="inet")
        listening[name] = [s.laddr.ip for s in sockets if s.status == psutil.CONN_LISTEN]
    assert all(listening.values()), listening
    assert {ip for ips in listening.values() for ip in ips} == {"127.0.0.1"}, listening


def test_stopping_a_cluster_leaves_no_process_or_directory(kube_binaries: KubeBinaries) -> None:
    cluster = start_cluster(nodes=1, binaries=kube_binaries)
    pids = list(cluster.pids().values())
    workdir = cluster.workdir
    assert len(pids) == 5
    assert all(psutil.pid_exists(pid) for pid in pids)
    cluster.stop()
    assert not [pid for pid in pids if psutil.pid_exists(pid)]
    assert not workdir.exists()


OWNER_SCRIPT = """
import json, sys, time
from tests.support.kube import KubeBinaries, start_cluster
cluster = start_cluster(nodes=1, binaries=KubeBinaries(__import__("pathlib").Path(sys.argv[1])))
print(json.dumps({"pids": list(cluster.pids().values()), "workdir": str(cluster.workdir)}))
sys.stdout.flush()
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_killed_owner_takes_its_cluster_with_it(kube_binaries: KubeBinaries) -> None:
    """SIGKILL skips every finalizer; the kernel still ends the components."""
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, str(kube_binaries.bin_dir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert owner.stdout is not None
        started = json.loads(owner.stdout.readline())
    finally:
        owner.kill()
        owner.wait()
    pids: list[int] = started["pids"]
    assert len(pids) == 5
    wait_for("components to die with their owner", lambda: not any(map(alive, pids)), 15)
    assert Path(started["workdir"]) in sweep_stale_workdirs()


def test_control_plane_footprint(kube_cluster: KubeCluster) -> None:
    """Start-up time and memory stay small enough to run beside the other tiers."""
    rss = kube_cluster.rss_bytes()
    total_mib = sum(rss.values()) / 2**20
    print(
        f"\ncontrol plane: started in {kube_cluster.startup_seconds:.1f}s, "
        f"RSS {total_mib:.0f} MiB "
        + ", ".join(f"{name} {value / 2**20:.0f}" for name, value in rss.items())
    )
    assert all(rss.values()), rss
    assert total_mib < 2048
    assert kube_cluster.startup_seconds < 120

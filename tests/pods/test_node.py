"""The real node itself: images built here run as pods, in their own network, under the
restricted Pod Security standard, and reach a loopback server through the node address.

These are the preconditions of every other test in this tier, checked on their own so a
broken node says so in one line instead of as a stuck operator.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from ipaddress import ip_address, ip_network
from typing import Any

import pytest

from tests.support.kube import KubeCluster
from tests.support.node import NODE_IP, NODE_NAME, POD_CIDR, RealNode
from tests.support.sim import running_sim
from tests.support.waiting import wait_for

pytestmark = pytest.mark.pods

PROBE = """
import importlib.util, json, os, shutil, socket, sys, urllib.request
url = sys.argv[1]
body = urllib.request.urlopen(url, timeout=10).read()
try:
    socket.create_connection(("10.96.0.1", 443), timeout=2)
    outside = "reached"
except OSError as exc:
    outside = type(exc).__name__
extra = ("kopf", "kubernetes_asyncio", "steadfast_operator", "steadfast_dev")
shipped = ("steadfast_worker.workflows", "steadfast_worker.worker", "anthropic", "temporalio")
cached = importlib.util.cache_from_source
no_bytecode = [m for m in shipped if not os.path.exists(cached(importlib.util.find_spec(m).origin))]
print(json.dumps({"uid": os.getuid(), "status": len(body) > 0, "outside": outside,
                  "root_writable": os.access("/", os.W_OK),
                  "not_a_worker": [m for m in extra if importlib.util.find_spec(m)],
                  "temporal_cli": shutil.which("temporal") is not None,
                  "no_bytecode": no_bytecode}))
"""


def restricted_pod(name: str, image: str, args: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "probe",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["python", "-c", PROBE],
                "args": args,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    }  # fmt: skip


def test_real_node_registers_beside_kwok_and_kwok_leaves_it_alone(
    kube_cluster: KubeCluster, real_node: RealNode
) -> None:
    node = kube_cluster.kubectl_json("get", "node", NODE_NAME)
    assert node["metadata"]["labels"]["steadfast.dev/real-node"] == "true"
    assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == NODE_IP
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"].startswith("v1.34")
    assert info["containerRuntimeVersion"].startswith("containerd://")
    names = [n["metadata"]["name"] for n in kube_cluster.kubectl_json("get", "nodes")["items"]]
    assert sorted(names) == ["kwok-node-0", NODE_NAME]


def test_a_restricted_pod_runs_the_worker_image_and_reaches_only_the_node_address(
    kube_cluster: KubeCluster,
    real_node: RealNode,
    images: dict[str, dict[str, Any]],
    namespace: str,
    on_node: Callable[[str], str],
) -> None:
    with running_sim() as sim:
        url = f"http://{on_node(sim.base_url.removeprefix('http://'))}/_sim/health"
        pod = restricted_pod("probe", images["worker"]["ref"], [url])
        kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))

        def finished() -> dict[str, Any] | None:
            got = kube_cluster.kubectl_json("get", "pod", "probe", "-n", namespace)
            return got if got["status"].get("phase") in ("Succeeded", "Failed") else None

        done = wait_for("the probe pod to finish", finished, timeout=120)
    logs = kube_cluster.kubectl("logs", "probe", "-n", namespace).stdout
    assert done["status"]["phase"] == "Succeeded", logs
    assert done["spec"]["nodeName"] == NODE_NAME
    assert ip_address(done["status"]["podIP"]) in ip_network(POD_CIDR)
    result = json.loads(logs.strip().splitlines()[-1])
    assert result == {
        "uid": 65532,
        "status": True,
        # No route leaves the bridge: the Service network is not even attempted.
        "outside": "OSError",
        "root_writable": False,
        # The worker image carries a worker: no operator, no dev sandbox, no dev server.
        "not_a_worker": [],
        "temporal_cli": False,
        # Its bytecode was compiled at build time: a start does not compile every import.
        "no_bytecode": [],
    }

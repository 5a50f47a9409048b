"""Fixtures of the real-pod tier: a control plane with one kwok node and one real node.

The control plane is the e2e tier's (``tests.support.kube``), started here with one kwok
node, which is tainted so that every pod of this tier lands on the real node of
``tests.support.node`` (kubelet, containerd, runc, a CNI bridge) and runs the images
``hack/build-images`` built. A server on loopback that pods must reach is exposed on the
node's bridge address by ``on_node`` (a forwarder from NODE_IP:port to 127.0.0.1:port);
nothing else is reachable from a pod. hack/README.md draws the layout. The chart installed
on that node, shared by the tests that need it, is :mod:`tests.pods.chart_env`'s ``stack``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from tests.pods.chart_env import postgres_dsn, stack  # noqa: F401  (fixtures)
from tests.support.kube import KubeBinaries, KubeCluster, start_cluster
from tests.support.node import NODE_IP, NodeUnavailableError, RealNode, built_images
from tests.support.tcpforward import TCPForwarder

#: Keeps the kwok node for what it is (a node that runs nothing) in this tier.
KWOK_TAINT = "steadfast.dev/fake=true:NoSchedule"


@pytest.fixture(scope="session")
def images() -> dict[str, dict[str, Any]]:
    """name -> {ref, archive, bytes} of the images built by hack/build-images."""
    started = time.monotonic()
    try:
        index = built_images()
    except NodeUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)
    print(f"\nimages ready in {time.monotonic() - started:.1f}s:")
    for name, image in index.items():
        print(f"  {name:9} {image['bytes'] / 2**20:7.1f} MiB  {image['ref']}")
    return index


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    try:
        binaries = KubeBinaries.locate()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    cluster = start_cluster(nodes=1, binaries=binaries)
    try:
        cluster.kubectl("taint", "node", "kwok-node-0", KWOK_TAINT)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def real_node(kube_cluster: KubeCluster, images: dict[str, dict[str, Any]]) -> Iterator[RealNode]:
    node = RealNode(kube_cluster, images)
    try:
        node.start()
    except NodeUnavailableError as exc:
        node.stop()
        pytest.fail(str(exc), pytrace=False)
    except BaseException:
        # The error carries the failing component's log tail; nothing may outlive it.
        node.stop()
        raise
    print(f"\nreal node ready: {', '.join(f'{k} {v:.1f}s' for k, v in node.timings.items())}")
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def on_node() -> Iterator[Callable[[str], str]]:
    """``on_node("127.0.0.1:P")`` -> "10.244.0.1:P": the same server, reachable from pods."""
    with ExitStack() as exits:
        made: dict[str, str] = {}

        def expose(address: str) -> str:
            if address not in made:
                port = int(address.rpartition(":")[2])
                fwd = exits.enter_context(TCPForwarder(address, port=port, host=NODE_IP))
                made[address] = fwd.address
            return made[address]

        yield expose


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A fresh namespace under the restricted Pod Security standard, deleted after."""
    name = f"p-{uuid.uuid4().hex[:10]}"
    kube_cluster.kubectl("create", "namespace", name)
    kube_cluster.kubectl(
        "label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted"
    )
    kube_cluster.kubectl(
        "wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s"
    )
    try:
        yield name
    finally:
        kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)

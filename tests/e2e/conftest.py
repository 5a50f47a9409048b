"""Fixtures for the e2e tier: one real control plane per session, a namespace per test.

The cluster is built from the binaries of ``hack/k8s-binaries`` (located through
``$STEADFAST_K8S_BIN`` or the script itself) and started by ``tests.support.kube``.
Starting it takes seconds, so the whole session shares it; tests stay apart by
working in their own namespace. The operator tests' fixtures (the CRD, the
simulator, an operator process per test) live in :mod:`tests.e2e.operator_env`
and are registered here for every module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.operator_env import crd, op_sim, operator, scene  # noqa: F401  (fixtures)
from tests.support.abandoned import no_abandoned_work  # noqa: F401  (autouse fixture)
from tests.support.kube import KubeBinaries, KubeCluster, start_cluster


@pytest.fixture(scope="session")
def kube_binaries() -> KubeBinaries:
    """The built binaries; a clear failure, not a skip, when they are missing."""
    try:
        return KubeBinaries.locate()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def kube_cluster(kube_binaries: KubeBinaries) -> Iterator[KubeCluster]:
    """etcd, kube-apiserver, controller-manager, scheduler and kwok with two fake Nodes.

    Exposes ``kubeconfig`` (admin), ``binaries``, ``env()`` for subprocesses, and
    ``kubectl()``/``helm()`` helpers.
    """
    cluster = start_cluster(nodes=2, binaries=kube_binaries)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kubeconfig(kube_cluster: KubeCluster) -> Path:
    return kube_cluster.kubeconfig


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A fresh namespace, ready for Pods (its default ServiceAccount exists), deleted after."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube_cluster.kubectl("create", "namespace", name)
    # Pods are refused until the ServiceAccount controller has made `default`.
    kube_cluster.kubectl(
        "wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s"
    )
    try:
        yield name
    finally:
        # The namespace controller finishes the job; waiting for it only slows tests.
        kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)

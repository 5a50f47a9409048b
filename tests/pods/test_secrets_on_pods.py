"""Secrets as volumes on a real kubelet: the TLS Secret and the API-key Secret.

The worker configuration points at files the Deployment mounts from Secrets; kwok mounts
nothing, so only a real kubelet shows the rendered volumes and the worker's reading of them
work together. Temporal sits behind an mTLS proxy (``tests.support.tlsproxy``) reached at
the node address.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from steadfast_contract import ids
from tests.pods.chart_env import Stack, agent, apply_agent, completed, ready_pod, secret
from tests.support.kube_pki import issue
from tests.support.node import NODE_IP
from tests.support.tcpforward import TCPForwarder
from tests.support.tlsproxy import TLSProxy, make_test_pki
from tests.support.waiting import wait_for

pytestmark = pytest.mark.pods


async def test_worker_pods_read_the_mounted_tls_secret_and_api_key(
    stack: Stack,
    namespace: str,
    temporal_address: str,
    tmp_path: Path,
) -> None:
    """Secret volumes, not only secretKeyRef variables: a Temporal behind mTLS (and an API
    key) is reached by the operator pod and by a worker pod that reads the kubelet's mounts
    of the TLS Secret and the API-key Secret."""
    cluster = stack.cluster
    pki = make_test_pki(tmp_path / "pki")
    # The pods dial the proxy at the node address: its certificate must name it.
    issue(pki.dir, "server", "/CN=localhost", ("IP:127.0.0.1", f"IP:{NODE_IP}"))
    # A forwarder of this test's own (not the session's): leaving the block resets the
    # operator's connection, so the proxy is not left waiting for it.
    with (
        TLSProxy(temporal_address, pki) as proxy,
        TCPForwarder(proxy.address, port=proxy.port, host=NODE_IP) as fwd,
    ):
        topic = "Secrets as files on a real kubelet"
        manifest = agent(stack.sim_url, namespace, "secure", [topic], 1)
        manifest["spec"]["temporal"] = {
            "address": fwd.address,
            "tls": {"secretName": "temporal-mtls"},
            "apiKeySecretRef": {"name": "temporal-cloud", "key": "api-key"},
        }
        tls = {
            "tls.crt": pki.client_cert.read_text(),
            "tls.key": pki.client_key.read_text(),
            "ca.crt": pki.ca.read_text(),
        }
        docs = [
            secret("temporal-mtls", namespace, tls),
            secret("temporal-cloud", namespace, {"api-key": "tk-pods"}),
        ]
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        apply_agent(stack, namespace, manifest)
        runs = wait_for(
            "the run Completed", lambda: completed(cluster, namespace, "secure", 1), 240
        )
        assert runs[0]["workflowId"] == ids.workflow_id(namespace, "secure", topic)
        pod = wait_for(
            "a Ready worker pod",
            lambda: ready_pod(cluster, namespace, "app.kubernetes.io/name=steadfast-worker"),
            timeout=60,
        )
        # While Temporal is still reachable: deletion cancels in Temporal before it ends.
        cluster.kubectl("delete", "ra", "secure", "-n", namespace, "--timeout=60s")
    # Every connection through the proxy presented the Secret's client certificate; the
    # worker's went through the kubelet's mount of it (no other copy exists in the pod).
    assert proxy.subjects
    assert set(proxy.subjects) == {pki.client_subject}
    assert proxy.rejected == 0, proxy.errors
    mounts = {m["name"]: m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert {"temporal-tls", "temporal-api-key"} <= set(mounts)

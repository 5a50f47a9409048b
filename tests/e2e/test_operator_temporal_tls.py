"""The operator and its workers reaching a Temporal that demands mTLS.

The dev server has no TLS, so :class:`tests.support.tlsproxy.TLSProxy` stands in
front of it: it requires a client certificate signed by the test CA and records
the subject of every certificate it accepted. The agent names a Secret with
``tls.crt``, ``tls.key`` and ``ca.crt``; the operator connects with it to start
runs, and a worker started from the rendered ConfigMap, with the Secret written
where the Deployment mounts it, finishes them through the same proxy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client, WorkflowExecutionStatus
from tests.e2e import operator_env
from tests.e2e.operator_env import (
    Operator,
    agent_manifest,
    apply,
    condition,
    get,
    secret,
    wait_for,
    worker_process,
)
from tests.support.kube import KubeCluster
from tests.support.sim import SimHandle
from tests.support.tlsproxy import TestPKI, TLSProxy, make_test_pki

from steadfast_worker import ids

pytestmark = pytest.mark.e2e

crd = operator_env.crd
op_sim = operator_env.op_sim
operator = operator_env.operator


def tls_secret(cluster: KubeCluster, namespace: str, name: str, client: TestPKI, ca: Path) -> None:
    secret(
        cluster,
        namespace,
        name,
        {
            "tls.crt": client.client_cert.read_text(),
            "tls.key": client.client_key.read_text(),
            "ca.crt": ca.read_text(),
        },
    )


async def test_runs_start_and_finish_over_mtls_with_the_secrets_certificate(
    operator: Operator,
    kube_cluster: KubeCluster,
    namespace: str,
    op_sim: SimHandle,
    temporal_address: str,
    temporal_client: Client,
    tmp_path: Path,
) -> None:
    pki = make_test_pki(tmp_path / "pki")
    stranger = make_test_pki(tmp_path / "stranger", client_subject="/O=elsewhere/CN=intruder")
    topic = "durable agents behind mTLS"
    wf_id = ids.workflow_id(namespace, "secure", topic)
    with TLSProxy(temporal_address, pki) as proxy:
        secret(kube_cluster, namespace, "llm", {"api-key": "sk-sim"})
        # First a Secret whose CA did not sign the proxy's certificate: the operator
        # must refuse the server, say so in the status, and start nothing.
        tls_secret(kube_cluster, namespace, "temporal-mtls", pki, stranger.ca)
        temporal = {"address": proxy.address, "tls": {"secretName": "temporal-mtls"}}
        apply(
            kube_cluster,
            agent_manifest("secure", namespace, op_sim, [topic], temporal=temporal),
        )

        def reason() -> str:
            return str(
                condition(get(kube_cluster, "ra", namespace, "secure"), "Ready").get("reason")
            )

        wait_for("Ready=False/TemporalUnreachable", lambda: reason() == "TemporalUnreachable")
        assert proxy.subjects == []  # no handshake completed
        assert proxy.rejected >= 1
        assert [e async for e in temporal_client.list_workflows(f"WorkflowId = '{wf_id}'")] == []

        # The right CA: the operator's retry reconnects (a failed connect is not
        # cached) and starts the run through the proxy with the Secret's certificate.
        tls_secret(kube_cluster, namespace, "temporal-mtls", pki, pki.ca)

        def listed() -> dict[str, Any] | None:
            ra = get(kube_cluster, "ra", namespace, "secure")
            runs = ((ra or {}).get("status") or {}).get("runs") or []
            return ra if [r["workflowId"] for r in runs] == [wf_id] else None

        wait_for("the run listed in status", listed, timeout=60)
        assert (await temporal_client.get_workflow_handle(wf_id).describe()).status == (
            WorkflowExecutionStatus.RUNNING
        )
        assert proxy.subjects
        assert set(proxy.subjects) == {pki.client_subject}

        # The pod mounts the Secret where the rendered worker config looks for it.
        dep = get(kube_cluster, "deploy", namespace, "secure-worker")
        cm = get(kube_cluster, "cm", namespace, "secure-worker-config")
        assert dep is not None
        assert cm is not None
        pod = dep["spec"]["template"]["spec"]
        volume = {v["name"]: v for v in pod["volumes"]}["temporal-tls"]
        assert volume["secret"]["secretName"] == "temporal-mtls"
        mount = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}["temporal-tls"]
        tls = yaml.safe_load(cm["data"]["worker.yaml"])["temporal"]["tls"]
        assert tls["secretDir"] == mount["mountPath"]

        before = proxy.accepted
        with worker_process(kube_cluster, namespace, "secure", tmp_path, op_sim):

            def completed() -> bool:
                ra = get(kube_cluster, "ra", namespace, "secure")
                runs = ((ra or {}).get("status") or {}).get("runs") or []
                return [r["phase"] for r in runs] == ["Completed"]

            wait_for("the run Completed over mTLS", completed, timeout=120)
        assert proxy.accepted > before  # the worker connected through the proxy too
        assert set(proxy.subjects) == {pki.client_subject}
        # Delete while the proxy still serves, so the finalizer can reach Temporal.
        kube_cluster.kubectl("delete", "ra", "secure", "-n", namespace, "--timeout=60s")

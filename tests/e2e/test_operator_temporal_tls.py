"""The operator and its workers reaching a Temporal that demands mTLS.

The dev server has no TLS, so :class:`tests.support.tlsproxy.TLSProxy` stands in
front of it: it requires a client certificate signed by the test CA and records
the subject of every certificate it accepted. The agent names a Secret with
``tls.crt``, ``tls.key`` and ``ca.crt``; the operator connects with it to start
runs, and a worker started from the rendered ConfigMap, with the Secret written
where the Deployment mounts it, finishes them through the same proxy. When the
Secret is renewed, the operator reconnects with the new certificate.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client, WorkflowExecutionStatus
from tests.e2e.operator_env import (
    Operator,
    agent_manifest,
    apply,
    condition,
    get,
    running_operator,
    secret,
    store_secret,
    tls_secret,
    wait_for,
    worker_process,
)
from tests.support.kube import KubeCluster
from tests.support.kube_pki import issue
from tests.support.sim import SimHandle
from tests.support.tlsproxy import TLSProxy, make_test_pki

from steadfast_contract import ids

pytestmark = pytest.mark.e2e


RENEWED_SUBJECT = "/O=steadfast-tests/CN=steadfast-operator-renewed"


@pytest.fixture
def operator(
    crd: None, kube_cluster: KubeCluster, namespace: str, temporal_address: str, tmp_path: Path
) -> Iterator[Operator]:
    """The operator, re-reading Temporal credential Secrets every second."""
    log = tmp_path / "operator.log"
    extra = ("--credentials-check", "1")
    with running_operator(kube_cluster, namespace, temporal_address, log, *extra) as op:
        yield op


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
        store_secret(kube_cluster, namespace)
        # First a Secret whose CA did not sign the proxy's certificate: the operator
        # must refuse the server, say so in the status, and start nothing.
        tls_secret(
            kube_cluster, namespace, "temporal-mtls", pki.client_cert, pki.client_key, stranger.ca
        )
        # An API key as well (Temporal Cloud takes both): the workers read it from
        # the file the Deployment mounts, so a worker that could not would fail.
        secret(kube_cluster, namespace, "temporal-cloud", {"api-key": "tk-e2e"})
        temporal = {
            "address": proxy.address,
            "tls": {"secretName": "temporal-mtls"},
            "apiKeySecretRef": {"name": "temporal-cloud", "key": "api-key"},
        }
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
        tls_secret(
            kube_cluster, namespace, "temporal-mtls", pki.client_cert, pki.client_key, pki.ca
        )

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
        temporal_cfg = yaml.safe_load(cm["data"]["worker.yaml"])["temporal"]
        assert temporal_cfg["tls"]["secretDir"] == mount["mountPath"]
        key_mount = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}["temporal-api-key"]
        assert temporal_cfg["apiKeyFile"] == f"{key_mount['mountPath']}/api-key"
        assert "tk-e2e" not in json.dumps(dep)

        before = proxy.accepted
        with worker_process(kube_cluster, namespace, "secure", tmp_path, op_sim):

            def completed() -> bool:
                ra = get(kube_cluster, "ra", namespace, "secure")
                runs = ((ra or {}).get("status") or {}).get("runs") or []
                return [r["phase"] for r in runs] == ["Completed"]

            wait_for("the run Completed over mTLS", completed, timeout=120)
        assert proxy.accepted > before  # the worker connected through the proxy too
        assert set(proxy.subjects) == {pki.client_subject}

        # The Secret is renewed (a new certificate, a new subject): within its
        # credentials check the operator reconnects with it, and keeps working.
        issue(pki.dir, "renewed", RENEWED_SUBJECT)
        renewed = (pki.dir / "renewed.crt", pki.dir / "renewed.key", pki.ca)
        tls_secret(kube_cluster, namespace, "temporal-mtls", *renewed)
        wait_for(
            "the operator to connect with the renewed certificate",
            lambda: RENEWED_SUBJECT in proxy.subjects,
            timeout=30,
        )
        assert reason() not in ("TemporalUnreachable", "ReconcileError")
        # Delete while the proxy still serves, so the finalizer can reach Temporal.
        kube_cluster.kubectl("delete", "ra", "secure", "-n", namespace, "--timeout=60s")

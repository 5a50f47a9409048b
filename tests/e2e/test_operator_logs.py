"""The operator's debug log never holds a Secret's data.

The operator reads whole Secrets (the ones an agent names, and Temporal's
credentials, again at every credentials check), and the Kubernetes client logs
every response body at DEBUG. ``steadfast operator --verbose`` (the chart's
``operator.verbose``) must still show no key, no DSN and no private key, raw or
base64-encoded as the API server sends them.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from tests.e2e.operator_env import (
    STORE_SECRET,
    agent_manifest,
    apply,
    condition,
    get,
    running_operator,
    secret,
    tls_secret,
)
from tests.support.kube import KubeCluster
from tests.support.sim import SimHandle
from tests.support.tlsproxy import TLSProxy, make_test_pki
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.hostile]

LLM_KEY = "sk-ant-api03-log-audit-Q7ZK2M"
DSN = "postgresql://steadfast:pg-log-audit-Q7ZK2M@db.invalid:5432/reports"
TEMPORAL_KEY = "tk-log-audit-Q7ZK2M"


def forms(value: str) -> list[str]:
    """``value`` as it may appear in a log: itself, and as the API server encodes it."""
    return [value, base64.b64encode(value.encode()).decode()]


def test_verbose_operator_logs_no_secret(
    crd: None,
    kube_cluster: KubeCluster,
    namespace: str,
    temporal_address: str,
    op_sim: SimHandle,
    tmp_path: Path,
) -> None:
    pki = make_test_pki(tmp_path / "pki")
    private_key = pki.client_key.read_text()
    # A line from inside the PEM body: what a log of the decoded Secret would show.
    key_line = private_key.splitlines()[2]
    log = tmp_path / "operator.log"
    with TLSProxy(temporal_address, pki) as proxy:
        secret(kube_cluster, namespace, "llm", {"api-key": LLM_KEY})
        secret(kube_cluster, namespace, STORE_SECRET, {"dsn": DSN})
        tls_secret(
            kube_cluster, namespace, "temporal-mtls", pki.client_cert, pki.client_key, pki.ca
        )
        secret(kube_cluster, namespace, "temporal-key", {"api-key": TEMPORAL_KEY})
        temporal = {
            "address": proxy.address,
            "tls": {"secretName": "temporal-mtls"},
            "apiKeySecretRef": {"name": "temporal-key", "key": "api-key"},
        }
        extra = ("--verbose", "--credentials-check", "1")
        with running_operator(kube_cluster, namespace, temporal_address, log, *extra):
            apply(
                kube_cluster,
                agent_manifest("quiet", namespace, op_sim, ["t"], temporal=temporal),
            )
            wait_for(
                "Ready=True (the Secrets read, Temporal reached with them)",
                lambda: (
                    condition(get(kube_cluster, "ra", namespace, "quiet"), "Ready").get("status")
                    == "True"
                ),
                timeout=60,
            )
            time.sleep(3)  # a few credentials checks, each reading the Secrets again
        assert proxy.subjects == [pki.client_subject] * len(proxy.subjects)
        assert proxy.subjects
    text = log.read_text(errors="replace")
    assert " DEBUG " in text  # the log is verbose: the test would see a body if logged
    found = [
        f"{name}: …{text[max(0, text.index(f) - 120) : text.index(f)]!r}"
        for name, value in {
            "llm key": LLM_KEY,
            "dsn": DSN,
            "temporal key": TEMPORAL_KEY,
            "tls.key": private_key,
        }.items()
        for f in forms(value)
        if f in text
    ]
    if key_line in text:
        found.append("tls.key: a line of its PEM body")
    assert not found, "\n".join(found)

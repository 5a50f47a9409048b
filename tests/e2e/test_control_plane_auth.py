"""The control plane's authentication and authorization, as the operator's RBAC relies on them.

A ServiceAccount's token is authenticated, and SubjectAccessReviews follow the
Roles bound to it; split from test_control_plane.py to keep each module short.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from tests.support.kube import (
    KubeCluster,
)

pytestmark = pytest.mark.e2e


def rbac_objects(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "pod-reader"},
                "rules": [
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "reader-reads-pods"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "pod-reader",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
            },
        ],
    }


async def test_subject_access_review_follows_rbac_for_a_service_account(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    kube_cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(rbac_objects(namespace))
    )
    user = f"system:serviceaccount:{namespace}:reader"

    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(kube_cluster.kubeconfig), client_configuration=configuration
    )
    async with k8s.ApiClient(configuration) as api:
        authz = k8s.AuthorizationV1Api(api)

        async def allowed(verb: str, resource: str, ns: str) -> bool:
            review = k8s.V1SubjectAccessReview(
                spec=k8s.V1SubjectAccessReviewSpec(
                    user=user,
                    groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
                    resource_attributes=k8s.V1ResourceAttributes(
                        namespace=ns, verb=verb, resource=resource
                    ),
                )
            )
            answer = await authz.create_subject_access_review(body=review)
            return bool(answer.status.allowed)

        assert await allowed("list", "pods", namespace)
        assert await allowed("get", "pods", namespace)
        assert not await allowed("delete", "pods", namespace)
        assert not await allowed("list", "secrets", namespace)
        assert not await allowed("list", "pods", "default")


def test_service_account_token_is_authenticated_and_authorized(
    kube_cluster: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    """A token signed by the apiserver's service-account key, used over the wire."""
    kube_cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(rbac_objects(namespace))
    )
    token = kube_cluster.kubectl(
        "create", "token", "reader", "-n", namespace, "--duration=10m"
    ).stdout.strip()
    as_reader = str(kube_cluster.token_kubeconfig(token, tmp_path / "reader.kubeconfig"))

    whoami = kube_cluster.kubectl_json("--kubeconfig", as_reader, "auth", "whoami")
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:reader"
    kube_cluster.kubectl("--kubeconfig", as_reader, "get", "pods", "-n", namespace)
    denied = kube_cluster.kubectl(
        "--kubeconfig", as_reader, "get", "secrets", "-n", namespace, check=False
    )
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert 'cannot list resource "secrets"' in denied.stderr, denied.stderr

    bogus = str(kube_cluster.token_kubeconfig(token[:-4] + "AAAA", tmp_path / "bogus.kubeconfig"))
    rejected = kube_cluster.kubectl(
        "--kubeconfig", bogus, "get", "pods", "-n", namespace, check=False
    )
    assert rejected.returncode != 0
    assert "Unauthorized" in rejected.stderr or "credentials" in rejected.stderr, rejected.stderr

"""Where the operator's Kopf client finds the apiserver inside a pod.

Kopf's own service-account login names ``https://kubernetes.default.svc``, which needs
cluster DNS; the operator uses the address the kubelet hands the pod, like its other
client and every client library (the real-pod tier runs it where no DNS exists).
"""

from __future__ import annotations

import pytest

from steadfast_operator.handlers import in_cluster_server

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("env", "server"),
    [
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"},
         "https://10.96.0.1:443"),
        ({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"},
         "https://[fd00::1]:6443"),
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, None),
        ({"KUBERNETES_SERVICE_PORT": "443"}, None),
        ({}, None),
    ],
)  # fmt: skip
def test_in_cluster_server_is_the_address_the_kubelet_gives_the_pod(
    env: dict[str, str], server: str | None
) -> None:
    assert in_cluster_server(env) == server

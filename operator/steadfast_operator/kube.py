"""A small JSON client for the Kubernetes objects the operator owns.

The operator writes plain dictionaries rendered by :mod:`.render`; going
through kubernetes_asyncio's typed models would convert them twice and lose
fields the models do not know (KEDA's ScaledObject has no model at all). So
this module sends JSON through kubernetes_asyncio's ``ApiClient`` (which keeps
its authentication, TLS and kubeconfig handling) and counts every request by
verb, which the metrics and the "an unchanged resync writes nothing" tests read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

Obj = dict[str, Any]

#: kind -> (API path prefix, plural) for every kind the operator touches.
RESOURCES: dict[str, tuple[str, str]] = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Service": ("/api/v1", "services"),
    "Secret": ("/api/v1", "secrets"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "ScaledObject": ("/apis/keda.sh/v1alpha1", "scaledobjects"),
    "TriggerAuthentication": ("/apis/keda.sh/v1alpha1", "triggerauthentications"),
}


def path(kind: str, namespace: str, name: str = "", sub: str = "") -> str:
    prefix, plural = RESOURCES[kind]
    out = f"{prefix}/namespaces/{namespace}/{plural}"
    if name:
        out += f"/{name}"
    if sub:
        out += f"/{sub}"
    return out


async def load_config(kubeconfig: str | None) -> k8s.Configuration:
    """In-cluster when running in a pod and no kubeconfig is given, else the kubeconfig."""
    cfg = k8s.Configuration()
    if kubeconfig is None:
        try:
            k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            return cfg
        except k8s_config.ConfigException:
            pass
    await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return cfg


class Kube:
    """JSON requests on one ``ApiClient``; ``requests`` counts them by verb."""

    def __init__(
        self,
        configuration: k8s.Configuration,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        self.api = k8s.ApiClient(configuration)
        self.requests: Counter[str] = Counter()
        self._on_request = on_request

    async def close(self) -> None:
        await self.api.close()

    async def _call(
        self, method: str, url: str, body: Obj | None = None, content_type: str = ""
    ) -> Obj:
        self.requests[method] += 1
        if self._on_request is not None:
            self._on_request(method)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        result = await self.api.call_api(
            url,
            method,
            header_params=headers,
            body=body,
            response_types_map={200: "object", 201: "object", 202: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )
        return dict(result or {})

    async def get(self, url: str) -> Obj | None:
        """The object, or ``None`` when it does not exist."""
        try:
            return await self._call("GET", url)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    async def create(self, url: str, body: Obj) -> Obj:
        return await self._call("POST", url, body)

    async def replace(self, url: str, body: Obj) -> Obj:
        return await self._call("PUT", url, body)

    async def merge_patch(self, url: str, body: Obj) -> Obj:
        return await self._call("PATCH", url, body, "application/merge-patch+json")

    async def delete(self, url: str) -> bool:
        """Delete; ``False`` when it was already gone."""
        try:
            await self._call("DELETE", url)
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    @property
    def writes(self) -> int:
        return sum(n for verb, n in self.requests.items() if verb != "GET")

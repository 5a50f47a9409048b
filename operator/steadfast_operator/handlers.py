"""Kopf handlers for ResearchAgents: thin wrappers over :mod:`.reconcile`.

Handlers are registered on a registry built per operator configuration (not
Kopf's global one), so the status interval and defaults come from the command
line and tests can build an operator with their own settings.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import kopf

from steadfast_contract import crdgen
from steadfast_operator import apply, deletion, finalizing, queueclaims, reconcile, shared
from steadfast_operator.reconcile import AgentState
from steadfast_operator.settings import OperatorConfig
from steadfast_operator.shared import Shared

RESOURCE = (crdgen.GROUP, crdgen.VERSION, crdgen.PLURAL)


def _state(memo: Any) -> AgentState:
    """Per-agent state lives in the agent's own memo (Kopf keeps one per object)."""
    state: AgentState | None = getattr(memo, "agent_state", None)
    if state is None:
        state = AgentState()
        memo.agent_state = state
    return state


def in_cluster_server(env: Mapping[str, str]) -> str | None:
    """The apiserver's URL from the variables the kubelet sets in every pod
    (``KUBERNETES_SERVICE_HOST``/``_PORT``), as client-go's in-cluster config reads
    them; ``None`` outside a pod."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def _shared(memo: Any) -> Shared:
    found: Shared = memo.shared
    return found


def build_registry(cfg: OperatorConfig) -> kopf.OperatorRegistry:
    """Every handler of the operator, bound to ``cfg``."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        if cfg.kubeconfig:
            return kopf.login_with_kubeconfig(**kwargs)
        info = kopf.login_with_service_account(**kwargs)
        server = in_cluster_server(os.environ)
        if info is not None and server is not None:
            # Kopf's helper names https://kubernetes.default.svc, which only cluster DNS
            # resolves; the operator's other client (kube.load_config) and every client
            # library use the address the kubelet gives the pod, so both reach one
            # apiserver, DNS or not.
            return dataclasses.replace(info, server=server)
        return info or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def on_startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        await shared.start(settings, memo, cfg)

    @kopf.on.cleanup(registry=registry)
    async def on_cleanup(memo: Any, **_: Any) -> None:
        await shared.stop(memo)

    @kopf.on.probe(id="temporal_clients", registry=registry)
    def probe(memo: Any, **_: Any) -> int:
        return _shared(memo).temporal.connected

    # Every agent's task queue, filled before any handler runs (queueclaims).
    @kopf.index(*RESOURCE, id="agent_queues", registry=registry)
    def agent_queues(
        namespace: str | None, name: str | None, body: kopf.Body, **_: Any
    ) -> dict[queueclaims.QueueKey, queueclaims.Claim]:
        ns, agent = namespace or "", name or ""
        key = queueclaims.claimed_queue(
            ns, agent, body.spec, body.status, cfg.defaults.temporal_address
        )
        created = str(body.meta.get("creationTimestamp") or "")
        return {key: queueclaims.Claim(created, ns, agent)}

    @kopf.on.resume(*RESOURCE, registry=registry)
    @kopf.on.create(*RESOURCE, registry=registry)
    @kopf.on.update(*RESOURCE, field="spec", registry=registry)
    async def on_change(body: kopf.Body, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
        claims: reconcile.Claims = kwargs["agent_queues"]  # the index above, by its name
        await reconcile.reconcile(_shared(memo), _state(memo), body, patch, claims)

    @kopf.timer(
        *RESOURCE,
        interval=cfg.status_interval,
        initial_delay=cfg.status_interval,
        registry=registry,
    )
    async def on_timer(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
        await reconcile.refresh(_shared(memo), _state(memo), body, patch)

    @kopf.on.event(
        "apps",
        "v1",
        "deployments",
        labels={"app.kubernetes.io/managed-by": "steadfast-operator"},
        registry=registry,
    )
    def on_deployment(
        type: str, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
    ) -> None:
        known = _shared(memo).deployments
        if type == "DELETED":
            known.pop((namespace or "", name), None)
        else:
            obj = dict(body)
            known[(namespace or "", name)] = (
                apply.controller_uid(obj),
                *reconcile.replica_counts(obj),
            )

    # No retry limit: the finalizer stays until Temporal confirms (docs/design.md §2);
    # finalize raises TemporaryError with a bounded backoff, and Abandon is the way out.
    @kopf.on.delete(*RESOURCE, retries=None, backoff=deletion.FIRST_DELAY, registry=registry)
    async def on_delete(
        body: kopf.Body, patch: kopf.Patch, retry: int, memo: Any, **_: Any
    ) -> None:
        await finalizing.finalize(_shared(memo), _state(memo), body, patch, retry)

    return registry


def run(cfg: OperatorConfig) -> None:
    """Run the operator until it is stopped (SIGINT/SIGTERM)."""
    if cfg.kubeconfig:
        # Kopf's own login reads $KUBECONFIG; the JSON client is given the path directly.
        os.environ["KUBECONFIG"] = cfg.kubeconfig
    kopf.run(
        registry=build_registry(cfg),
        clusterwide=cfg.all_namespaces,
        namespaces=cfg.namespaces,
        standalone=True,
        liveness_endpoint=(
            f"http://{cfg.listen}:{cfg.health_port}/healthz" if cfg.health_port else None
        ),
        memo=kopf.Memo(),
    )

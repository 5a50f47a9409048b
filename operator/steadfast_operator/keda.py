"""The KEDA objects of an agent whose ``spec.workers.autoscaler`` is ``keda``.

KEDA's own Temporal scaler then owns the worker Deployment's replicas (the
operator never touches them), authenticated with the agent's own Temporal
credentials. Pure rendering; :func:`steadfast_operator.render.children` adds
these to an agent's children.
"""

from __future__ import annotations

import re
from typing import Any

from steadfast_contract.spec import AgentSpec

Obj = dict[str, Any]


#: Task queue names KEDA's Temporal scaler accepts with includeRunningWorkflowCount.
KEDA_QUERY_SAFE = re.compile(r"[a-zA-Z0-9\-_./:]+")


def trigger_authentication(spec: AgentSpec, meta: Obj) -> Obj | None:
    """The credentials KEDA's Temporal scaler needs, from the agent's own Secrets.

    The same Secrets the workers use: the TLS Secret's ``tls.crt``/``tls.key``
    (and ``ca.crt``, which KEDA reads as empty, so the system roots, when the
    Secret has none) and the API key. ``None`` for a Temporal without credentials.
    ``meta`` is the object's metadata (named as the worker Deployment).
    """
    t = spec.temporal
    refs = []
    if t.tls.secret_name:
        for parameter, key in (("cert", "tls.crt"), ("key", "tls.key"), ("ca", "ca.crt")):
            refs.append({"parameter": parameter, "name": t.tls.secret_name, "key": key})
    if t.api_key_secret_ref.set:
        ref = t.api_key_secret_ref
        refs.append({"parameter": "apiKey", "name": ref.name, "key": ref.key})
    if not refs:
        return None
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": meta,
        "spec": {"secretTargetRef": refs},
    }


def scaled_object(
    spec: AgentSpec, meta: Obj, task_queue: str, temporal_address: str, authenticated: bool
) -> Obj:
    """KEDA's own Temporal scaler, for clusters that prefer KEDA to own replicas.

    With ``authenticated`` the trigger uses the agent's TriggerAuthentication
    (same name), which makes KEDA connect with TLS like the workers do.
    ``meta`` is the object's metadata (named as the worker Deployment, its target).
    """
    queue = task_queue
    name = meta["name"]
    metadata = {
        "endpoint": temporal_address,
        "namespace": spec.temporal.namespace,
        "taskQueue": queue,
        "queueTypes": "workflow,activity",
        "targetQueueSize": str(spec.workers.target_backlog_per_worker),
        "activationTargetQueueSize": "0",
    }
    if KEDA_QUERY_SAFE.fullmatch(queue):
        # As the built-in autoscaler does: no scale to zero while runs are in
        # flight, only when nothing waits and nothing runs (KEDA 2.21+). KEDA
        # refuses the option for a queue name its visibility query cannot quote.
        metadata["includeRunningWorkflowCount"] = "true"
    trigger: Obj = {"type": "temporal", "metadata": metadata}
    if authenticated:
        trigger["authenticationRef"] = {"name": name}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": spec.workers.min_replicas,
            "maxReplicaCount": spec.workers.max_replicas,
            "cooldownPeriod": int(spec.workers.scale_down_delay.total_seconds()),
            "triggers": [trigger],
        },
    }

"""Pure rendering: a ResearchAgent's spec to the Kubernetes objects its workers need.

Everything the operator writes for an agent is decided here, without I/O, so a
unit test can read the exact Deployment, ConfigMap, Service, PodDisruptionBudget,
KEDA ScaledObject and TriggerAuthentication (:mod:`.keda`) a spec produces. The worker
configuration comes from the same mapping ``steadfast dev`` uses
(:mod:`steadfast_contract.agentfile`), so a cluster and a laptop run an agent
identically.

Rules kept here: secrets reach pods only as ``secretKeyRef`` environment
variables or mounted Secrets (TLS, the Temporal API key), never as values; pods
meet the ``restricted`` Pod Security Standard; the pod template carries a hash of
what the worker reads, so only a change that reaches the worker rolls it, and a pod
told to stop is given time to finish its longest call (both decided in :mod:`.drain`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from steadfast_contract import crdgen
from steadfast_contract.agentfile import (
    DEFAULT_API_KEY_FILE,
    DEFAULT_TLS_DIR,
    SECRET_ENV,
    worker_config_from_spec,
)
from steadfast_contract.config import READY_PATH, WorkerConfig
from steadfast_contract.ids import WORKER_SUFFIX, default_task_queue
from steadfast_contract.spec import AgentSpec
from steadfast_operator import drain, keda

Obj = dict[str, Any]

CONFIG_DIR = "/etc/steadfast"
CONFIG_FILE = "worker.yaml"
DATA_DIR = "/var/lib/steadfast"
CONFIG_HASH = "steadfast.dev/config-hash"
AGENT_LABEL = "steadfast.dev/agent"
METRICS_PORT = 9464
SDK_METRICS_PORT = 9465
RUN_AS = 65532


@dataclass(frozen=True)
class Defaults:
    """What the operator fills in when a spec leaves it empty (set by the chart)."""

    image: str = ""
    temporal_address: str = ""
    image_pull_policy: str = "IfNotPresent"


@dataclass(frozen=True)
class AgentRef:
    """The identity of the ResearchAgent being rendered."""

    name: str
    namespace: str
    uid: str


def owner_reference(agent: AgentRef) -> Obj:
    return {
        "apiVersion": f"{crdgen.GROUP}/{crdgen.VERSION}",
        "kind": crdgen.KIND,
        "name": agent.name,
        "uid": agent.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selector_labels(agent: AgentRef) -> dict[str, str]:
    return {AGENT_LABEL: agent.name, "app.kubernetes.io/component": "worker"}


def labels(agent: AgentRef) -> dict[str, str]:
    return {
        **selector_labels(agent),
        "app.kubernetes.io/name": "steadfast-worker",
        "app.kubernetes.io/instance": agent.name,
        "app.kubernetes.io/managed-by": "steadfast-operator",
    }


def selector_string(agent: AgentRef) -> str:
    """The label selector in the form the scale subresource reports."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(agent).items()))


def deployment_name(agent: AgentRef) -> str:
    return f"{agent.name}{WORKER_SUFFIX}"


def config_map_name(agent: AgentRef) -> str:
    return f"{agent.name}{WORKER_SUFFIX}-config"


def task_queue(agent: AgentRef, spec: AgentSpec) -> str:
    return spec.temporal.task_queue or default_task_queue(agent.namespace, agent.name)


def _meta(agent: AgentRef, name: str, **extra: Any) -> Obj:
    return {
        "name": name,
        "namespace": agent.namespace,
        "labels": labels(agent),
        "ownerReferences": [owner_reference(agent)],
        **extra,
    }


def worker_config(agent: AgentRef, spec: AgentSpec, d: Defaults) -> WorkerConfig:
    """The worker's configuration for this agent (raises ``AgentError`` if unusable).

    It maps the spec the operator already validated; nothing is parsed twice. The
    worker waits for its running activities on SIGTERM (:func:`.drain.drained`).
    """
    config = worker_config_from_spec(
        agent.name,
        agent.namespace,
        spec,
        temporal_address=None if spec.temporal.address else d.temporal_address,
        # No SQLite in a cluster: a report on a pod's disk goes with the pod. The
        # workers save to Postgres (spec.storage.postgresSecretRef) or not at all.
        sqlite_path="",
        tls_dir=DEFAULT_TLS_DIR,
        api_key_file=DEFAULT_API_KEY_FILE,
        metrics_port=METRICS_PORT,
        sdk_metrics_port=SDK_METRICS_PORT,
    )
    return drain.drained(config)


def config_map(agent: AgentRef, config: WorkerConfig) -> Obj:
    text = yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(agent, config_map_name(agent)),
        "data": {CONFIG_FILE: text},
    }


#: Secret references the worker reads as files the Deployment mounts, not as
#: environment variables, so a rotated value reaches a running worker.
MOUNTED_REFS = frozenset({"temporal.apiKeySecretRef"})


def _env(spec: AgentSpec) -> list[Obj]:
    env: list[Obj] = []
    for path, ref in sorted(spec.secret_refs().items()):
        if path in MOUNTED_REFS:
            continue
        env.append(
            {
                "name": SECRET_ENV[path],
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
        )
    return env


def _resources(spec: AgentSpec) -> Obj:
    if spec.workers.resources:
        return {k: dict(v) for k, v in spec.workers.resources.items() if v}
    return {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}


def deployment(
    agent: AgentRef,
    spec: AgentSpec,
    d: Defaults,
    config: WorkerConfig,
    replicas: int,
) -> Obj:
    """The worker Deployment for ``config``; ``replicas`` is only used when it is created."""
    volumes: list[Obj] = [
        {"name": "config", "configMap": {"name": config_map_name(agent)}},
        {"name": "data", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[Obj] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "data", "mountPath": DATA_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if spec.temporal.tls.secret_name:
        volumes.append(
            {"name": "temporal-tls", "secret": {"secretName": spec.temporal.tls.secret_name}}
        )
        mounts.append({"name": "temporal-tls", "mountPath": DEFAULT_TLS_DIR, "readOnly": True})
    if spec.temporal.api_key_secret_ref.set:
        ref = spec.temporal.api_key_secret_ref
        key_dir, key_file = DEFAULT_API_KEY_FILE.rsplit("/", 1)
        secret = {"secretName": ref.name, "items": [{"key": ref.key, "path": key_file}]}
        volumes.append({"name": "temporal-api-key", "secret": secret})
        mounts.append({"name": "temporal-api-key", "mountPath": key_dir, "readOnly": True})
    container: Obj = {
        "name": "worker",
        "image": spec.workers.image or d.image,
        "imagePullPolicy": d.image_pull_policy,
        "command": ["steadfast"],
        "args": ["worker", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
        "env": [{"name": "HOME", "value": "/tmp"}, *_env(spec)],
        "ports": [
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
            {"name": "sdk-metrics", "containerPort": SDK_METRICS_PORT, "protocol": "TCP"},
        ],
        # Ready only once the worker polls Temporal, and not from SIGTERM on: a pod
        # that cannot reach Temporal must never count toward a rollout, or it would
        # replace working pods (steadfast_worker.health). Liveness asks only that
        # the process serves its metrics port, and keeps passing while a stopping
        # worker drains, so no probe cuts a drain short. Neither reads /metrics: a
        # stopping worker waits for the scrape of what its last calls counted, and
        # a probe's read would pass for that scrape (steadfast_worker.lastscrape).
        "readinessProbe": {
            "httpGet": {"path": READY_PATH, "port": "metrics"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "tcpSocket": {"port": "metrics"},
            "initialDelaySeconds": 30,
            "periodSeconds": 20,
            "failureThreshold": 3,
        },
        "resources": _resources(spec),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(agent, deployment_name(agent)),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(agent)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": labels(agent),
                    "annotations": {CONFIG_HASH: drain.template_hash(config, _env(spec))},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    # Above the worker's own wait, which outlasts any activity, so a
                    # stopped pod finishes its calls before the kubelet's SIGKILL.
                    "terminationGracePeriodSeconds": drain.termination_grace_seconds(config),
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "fsGroup": RUN_AS,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def service(agent: AgentRef) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(agent, deployment_name(agent)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(agent),
            "ports": [
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
                {
                    "name": "sdk-metrics",
                    "port": SDK_METRICS_PORT,
                    "targetPort": "sdk-metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def pdb(agent: AgentRef) -> Obj:
    # maxUnavailable rather than minAvailable: a drain may always evict one worker,
    # so a single-replica agent never blocks node maintenance.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(agent, deployment_name(agent)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(agent)}},
    }


def wants_pdb(spec: AgentSpec) -> bool:
    return spec.workers.max_replicas > 1


def children(agent: AgentRef, spec: AgentSpec, d: Defaults) -> list[Obj]:
    """Every object the agent should own, in the order they should be applied.

    The ConfigMap precedes the Deployment so new pods find their configuration.
    """
    config = worker_config(agent, spec, d)
    cm = config_map(agent, config)
    dep = deployment(agent, spec, d, config, replicas=spec.workers.min_replicas)
    objs = [cm, dep, service(agent)]
    if wants_pdb(spec):
        objs.append(pdb(agent))
    if spec.workers.autoscaler == "keda":
        auth = keda.trigger_authentication(spec, _meta(agent, deployment_name(agent)))
        if auth is not None:
            objs.append(auth)  # before the ScaledObject that refers to it
        objs.append(
            keda.scaled_object(
                spec,
                _meta(agent, deployment_name(agent)),
                task_queue(agent, spec),
                spec.temporal.address or d.temporal_address,
                authenticated=auth is not None,
            )
        )
    return objs

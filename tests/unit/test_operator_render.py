"""Rendering a ResearchAgent into its children: fields, hardening, secrets and hashes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from steadfast_contract.config import parse_config
from steadfast_operator import render
from steadfast_operator.spec import parse_spec

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).parents[2] / "examples" / "market-watch.yaml"
AGENT = render.AgentRef(name="market-watch", namespace="research", uid="uid-1")
DEFAULTS = render.Defaults(image="steadfast/worker:test", temporal_address="temporal:7233")


def example_spec() -> dict[str, Any]:
    return dict(yaml.safe_load(EXAMPLE.read_text())["spec"])


def children(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = parse_spec(AGENT.namespace, AGENT.name, raw)
    return {o["kind"]: o for o in render.children(AGENT, spec, DEFAULTS)}


def test_children_of_the_example() -> None:
    objs = children(example_spec())
    assert sorted(objs) == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]
    for obj in objs.values():
        assert obj["metadata"]["namespace"] == "research"
        (ref,) = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("ResearchAgent", "uid-1", True)


def test_config_map_is_a_valid_worker_config() -> None:
    cm = children(example_spec())["ConfigMap"]
    cfg = parse_config(yaml.safe_load(cm["data"][render.CONFIG_FILE]))
    assert cfg.agent == "market-watch"
    assert cfg.task_queue == "steadfast.research.market-watch"
    assert cfg.temporal.address == "temporal-frontend.temporal:7233"
    assert cfg.model.api_key_env == "ANTHROPIC_API_KEY"
    assert cfg.storage.sqlite_path == ""  # no report on a pod's disk: Postgres or nothing


def test_empty_address_takes_the_operator_default() -> None:
    raw = example_spec()
    raw["temporal"] = {"address": ""}
    cfg = yaml.safe_load(children(raw)["ConfigMap"]["data"][render.CONFIG_FILE])
    assert cfg["temporal"]["address"] == "temporal:7233"


def test_secrets_only_by_reference() -> None:
    dep = children(example_spec())["Deployment"]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["ANTHROPIC_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "anthropic",
        "key": "api-key",
    }
    assert env["STEADFAST_POSTGRES_DSN"]["valueFrom"]["secretKeyRef"]["name"] == "reports-db"
    assert all("value" not in e for name, e in env.items() if name != "HOME")


def test_restricted_pod_security() -> None:
    pod = children(example_spec())["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = pod["containers"][0]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False


def test_config_change_changes_the_template_hash() -> None:
    def hash_of(raw: dict[str, Any]) -> str:
        dep = children(raw)["Deployment"]
        return str(dep["spec"]["template"]["metadata"]["annotations"][render.CONFIG_HASH])

    base = example_spec()
    changed = example_spec()
    changed["model"] = {**changed["model"], "baseURL": "http://gateway.example:8080"}
    assert hash_of(base) == hash_of(example_spec())
    assert hash_of(base) != hash_of(changed)


def test_tls_secret_is_mounted_not_copied() -> None:
    raw = example_spec()
    raw["temporal"] = {**raw["temporal"], "tls": {"secretName": "temporal-client"}}
    pod = children(raw)["Deployment"]["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["temporal-tls"]["secret"] == {"secretName": "temporal-client"}
    cfg = yaml.safe_load(children(raw)["ConfigMap"]["data"][render.CONFIG_FILE])
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert cfg["temporal"]["tls"] == {
        "secretDir": mounts["temporal-tls"]["mountPath"],
        "certFile": "",
        "keyFile": "",
        "caFile": "",
        "serverName": "",
    }


def test_temporal_api_key_is_mounted_as_a_file_not_an_env_var() -> None:
    raw = example_spec()
    raw["temporal"] = {
        **raw["temporal"],
        "apiKeySecretRef": {"name": "temporal-cloud", "key": "api-key"},
    }
    kids = children(raw)
    pod = kids["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "TEMPORAL_API_KEY" not in {e["name"] for e in container["env"]}
    volume = {v["name"]: v for v in pod["volumes"]}["temporal-api-key"]
    assert volume["secret"] == {
        "secretName": "temporal-cloud",
        "items": [{"key": "api-key", "path": "api-key"}],
    }
    mount = {m["name"]: m for m in container["volumeMounts"]}["temporal-api-key"]
    cfg = yaml.safe_load(kids["ConfigMap"]["data"][render.CONFIG_FILE])
    assert cfg["temporal"]["apiKeyFile"] == f"{mount['mountPath']}/api-key"
    # The other secrets stay environment variables.
    assert "ANTHROPIC_API_KEY" in {e["name"] for e in container["env"]}


@pytest.mark.parametrize(
    ("workers", "kinds"),
    [
        ({"maxReplicas": 1}, {"ConfigMap", "Deployment", "Service"}),
        ({"maxReplicas": 3}, {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}),
        (
            {"maxReplicas": 3, "autoscaler": "keda"},
            {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "ScaledObject"},
        ),
    ],
)
def test_optional_children(workers: dict[str, Any], kinds: set[str]) -> None:
    raw = example_spec()
    raw["workers"] = workers
    assert set(children(raw)) == kinds


def test_keda_scaled_object() -> None:
    raw = example_spec()
    raw["workers"] = {"autoscaler": "keda", "minReplicas": 1, "maxReplicas": 4}
    so = children(raw)["ScaledObject"]["spec"]
    assert (so["minReplicaCount"], so["maxReplicaCount"], so["cooldownPeriod"]) == (1, 4, 60)
    (trigger,) = so["triggers"]
    assert trigger["type"] == "temporal"
    assert trigger["metadata"]["taskQueue"] == "steadfast.research.market-watch"
    # No credentials: no TriggerAuthentication, and KEDA connects without TLS.
    assert "authenticationRef" not in trigger
    assert "TriggerAuthentication" not in children(raw)
    # Like the built-in autoscaler, no scale to zero while runs are in flight.
    assert trigger["metadata"]["includeRunningWorkflowCount"] == "true"


def test_keda_leaves_out_running_counts_for_a_queue_name_it_would_refuse() -> None:
    raw = example_spec()
    raw["workers"] = {"autoscaler": "keda"}
    raw["temporal"] = {**raw["temporal"], "taskQueue": "research queue #1"}
    (trigger,) = children(raw)["ScaledObject"]["spec"]["triggers"]
    assert trigger["metadata"]["taskQueue"] == "research queue #1"
    assert "includeRunningWorkflowCount" not in trigger["metadata"]


def test_keda_gets_the_agents_temporal_credentials() -> None:
    raw = example_spec()
    raw["workers"] = {"autoscaler": "keda"}
    raw["temporal"] = {
        **raw["temporal"],
        "tls": {"secretName": "temporal-mtls"},
        "apiKeySecretRef": {"name": "temporal-cloud", "key": "api-key"},
    }
    kids = children(raw)
    auth = kids["TriggerAuthentication"]
    (trigger,) = kids["ScaledObject"]["spec"]["triggers"]
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    assert (
        auth["metadata"]["ownerReferences"] == kids["ScaledObject"]["metadata"]["ownerReferences"]
    )
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs == {
        "cert": ("temporal-mtls", "tls.crt"),
        "key": ("temporal-mtls", "tls.key"),
        "ca": ("temporal-mtls", "ca.crt"),
        "apiKey": ("temporal-cloud", "api-key"),
    }
    spec = parse_spec(AGENT.namespace, AGENT.name, raw)
    order = [o["kind"] for o in render.children(AGENT, spec, DEFAULTS)]
    assert order.index("TriggerAuthentication") < order.index("ScaledObject")


def test_user_resources_replace_defaults() -> None:
    raw = example_spec()
    raw["workers"] = {"resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}}}
    container = children(raw)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}}


@pytest.mark.parametrize("path", sorted(EXAMPLE.parent.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_renders(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    raw = dict(doc["spec"])
    agent = render.AgentRef(doc["metadata"]["name"], doc["metadata"]["namespace"], "uid")
    spec = parse_spec(agent.namespace, agent.name, raw)
    kinds = {o["kind"] for o in render.children(agent, spec, DEFAULTS)}
    assert {"ConfigMap", "Deployment", "Service"} <= kinds


def test_ready_only_when_the_worker_says_so_and_never_by_reading_metrics() -> None:
    (container,) = children(example_spec())["Deployment"]["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    ready = container["readinessProbe"]
    # An HTTP question the worker answers 503 until it polls Temporal and from SIGTERM
    # on (a TCP probe passed as soon as the metrics port opened).
    assert set(ready) == {"httpGet", "periodSeconds", "failureThreshold"}
    assert ready["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert ports["metrics"] == render.METRICS_PORT
    # Liveness keeps passing while a stopping worker drains (and reads no /metrics).
    assert container["livenessProbe"]["tcpSocket"] == {"port": "metrics"}
    for probe in (container["readinessProbe"], container["livenessProbe"]):
        assert "/metrics" not in str(probe)

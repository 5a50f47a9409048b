"""What `helm template` makes of the chart, for the values users will actually set.

Rendering needs no cluster, so these run with the unit tests: the operator's
arguments and defaults, RBAC in both modes with the least verbs, the switches for
monitors, alerts, dashboards, NetworkPolicies and the dev Temporal, the `fail`
messages for contradictory values and the schema's messages for mistyped ones.
Whether the API server accepts the output is tests/e2e/test_chart.py's job.

Helm is the binary built by hack/k8s-binaries; without it these tests skip,
saying how to build it.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.support.chart import (
    NAMESPACE,
    env_of,
    needs_helm,
    only,
    operator_container,
    refused,
    render,
)

pytestmark = [pytest.mark.unit, needs_helm]


def test_defaults_render_the_operator_and_dashboards_and_nothing_optional() -> None:
    docs = render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
            "ConfigMap",
            "ConfigMap",
        ]
    )
    container = operator_container(docs)
    assert container["args"] == [
        "operator",
        "--all-namespaces",
        "--metrics-port",
        "9090",
        "--health-port",
        "8080",
    ]
    env = env_of(container)
    assert env["STEADFAST_WORKER_IMAGE"] == "steadfast/worker:0.1.0"
    assert env["STEADFAST_TEMPORAL_ADDRESS"] == ""
    assert container["image"] == "steadfast/operator:0.1.0"


def test_operator_pod_meets_the_restricted_profile_and_has_probes_and_resources() -> None:
    docs = render()
    deployment = only(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    container = pod["containers"][0]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["readOnlyRootFilesystem"] is True
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9090, "health": 8080}
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"


def rules_of(role: Any) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


#: The operator's proven minimum (tests/e2e/test_operator_rbac.py runs it on these).
NAMESPACED_RULES = {
    ("steadfast.dev", "researchagents"): {"get", "list", "watch", "patch"},
    ("steadfast.dev", "researchagents/status"): {"get", "patch"},
    ("steadfast.dev", "researchagents/finalizers"): {"update"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "update"},
    ("apps", "deployments/scale"): {"patch"},
    ("", "configmaps"): {"get", "create", "update"},
    ("", "services"): {"get", "create", "update"},
    ("policy", "poddisruptionbudgets"): {"get", "create", "update", "delete"},
    ("", "secrets"): {"get"},
    ("", "events"): {"create"},
    ("events.k8s.io", "events"): {"create"},
    ("keda.sh", "scaledobjects"): {"get", "create", "update", "delete"},
    ("keda.sh", "triggerauthentications"): {"get", "create", "update", "delete"},
}
CLUSTER_RULES = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
}


def test_cluster_mode_grants_exactly_the_operators_rules_cluster_wide() -> None:
    docs = render()
    role = only(docs, "ClusterRole")
    assert rules_of(role) == NAMESPACED_RULES | CLUSTER_RULES
    binding = only(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "steadfast", "namespace": NAMESPACE}
    ]
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]


def test_namespace_mode_grants_roles_only_in_the_listed_namespaces() -> None:
    docs = render("watch.scope=namespaces", "watch.namespaces={research,finance}")
    roles = [d for d in docs if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["finance", "research"]
    for role in roles:
        assert rules_of(role) == NAMESPACED_RULES
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["finance", "research"]
    # Cluster-wide, only what Kopf needs to discover its CRD and namespaces.
    assert rules_of(only(docs, "ClusterRole")) == CLUSTER_RULES
    args = operator_container(docs)["args"]
    assert "--all-namespaces" not in args
    assert args[1:5] == ["--namespace", "research", "--namespace", "finance"]


def test_keda_rights_can_be_left_out() -> None:
    role = only(render("rbac.keda=false"), "ClusterRole")
    assert ("keda.sh", "scaledobjects") not in rules_of(role)
    assert ("keda.sh", "triggerauthentications") not in rules_of(role)


def test_rbac_can_be_left_to_the_cluster_administrator() -> None:
    docs = render("rbac.create=false")
    assert not [d for d in docs if "Role" in d["kind"]]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["watch.scope=namespaces"], "watch.namespaces is empty"),
        (["watch.namespaces={research}"], 'watch.scope is "cluster"'),
        (
            ["temporal.dev.enabled=true", "temporal.address=temporal:7233"],
            "leave temporal.address empty",
        ),
        (
            ["metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true"],
            "enable one",
        ),
        (
            ["metrics.serviceMonitor.enabled=true", "metrics.service.enabled=false"],
            "needs metrics.service.enabled=true",
        ),
        (["serviceAccount.create=false"], "needs serviceAccount.name"),
        (["operator.healthPort=9090"], "are the same port"),
    ],
)
def test_contradictory_values_fail_with_a_message_saying_what_to_change(
    sets: list[str], message: str
) -> None:
    assert message in refused(*sets)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"operator": {"replicass": 2}}, "replicass"),
        ({"operator": {"replicas": 3}}, "replicas"),
        ({"operator": {"metricsPort": "http"}}, "metricsPort"),
        ({"watch": {"scope": "everywhere"}}, "scope"),
        ({"temporal": {"address": "not an address"}}, "address"),
        ({"dashboards": {"lable": "grafana_dashboard"}}, "lable"),
        ({"workers": {"image": {"tag": "latest!"}}}, "tag"),
        # A stopping worker waits at most 40 s for the scrape of its last calls: at a
        # longer interval their cost never reached Prometheus (the audit).
        ({"workers": {"podMonitor": {"interval": "60s"}}}, "interval"),
        ({"workers": {"podMonitor": {"interval": "1m"}}}, "interval"),
        ({"workers": {"podMonitor": {"interval": "45000ms"}}}, "interval"),
    ],
)
def test_schema_refuses_mistyped_values_naming_the_value(
    values: dict[str, Any], named: str
) -> None:
    stderr = refused(values=values)
    assert "values don't meet the specifications of the schema" in stderr
    assert named in stderr


def test_digest_pins_images_and_tags_default_to_the_app_version() -> None:
    digest = "sha256:" + "a" * 64
    container = operator_container(
        render(f"operator.image.digest={digest}", "workers.image.tag=1.2.3")
    )
    assert container["image"] == f"steadfast/operator@{digest}"
    assert env_of(container)["STEADFAST_WORKER_IMAGE"] == "steadfast/worker:1.2.3"


def test_dev_temporal_runs_from_the_worker_image_and_becomes_the_default_address() -> None:
    docs = render("temporal.dev.enabled=true")
    dev = only(docs, "Deployment", lambda d: d["metadata"]["name"].endswith("-temporal-dev"))
    container = dev["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "steadfast/worker:0.1.0"
    assert container["command"] == ["temporal"]
    assert container["args"][:2] == ["server", "start-dev"]
    service = only(docs, "Service", lambda d: d["metadata"]["name"].endswith("-temporal-dev"))
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"grpc": 7233, "ui": 8233}
    address = env_of(operator_container(docs))["STEADFAST_TEMPORAL_ADDRESS"]
    assert address == f"steadfast-temporal-dev.{NAMESPACE}.svc:7233"


def test_temporal_address_passes_through() -> None:
    env = env_of(operator_container(render("temporal.address=temporal-frontend.temporal:7233")))
    assert env["STEADFAST_TEMPORAL_ADDRESS"] == "temporal-frontend.temporal:7233"


@pytest.mark.parametrize("interval", ["30s", "40s", "15s", "500ms", "40000ms"])
def test_a_worker_scrape_interval_within_the_last_scrape_wait_is_taken(interval: str) -> None:
    docs = render("workers.podMonitor.enabled=true", f"workers.podMonitor.interval={interval}")
    (monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    endpoints = monitor["spec"]["podMetricsEndpoints"]
    assert endpoints
    assert {e["interval"] for e in endpoints} == {interval}


@pytest.mark.parametrize(
    "values",
    [
        {"watch": {"scope": "namespaces", "namespaces": ["2024"]}},
        {"dashboards": {"namespace": "2024"}},
        {"serviceAccount": {"name": "2024"}},
        {"fullnameOverride": "2024", "prometheusRule": {"enabled": True}},
    ],
    ids=["watch.namespaces", "dashboards.namespace", "serviceAccount.name", "fullnameOverride"],
)
def test_a_name_of_digits_renders_as_a_string(values: dict[str, Any]) -> None:
    """``2024`` is a valid namespace and name, and the schema takes it; printed bare, YAML
    read it as a number, which the API server refuses (the audit)."""
    bad = []
    for doc in render(values=values):
        meta = doc["metadata"]
        names = [meta.get("name"), meta.get("namespace")]
        names += [s.get("name") for s in doc.get("subjects") or []]
        template = (doc.get("spec") or {}).get("template") or {}
        names.append((template.get("spec") or {}).get("serviceAccountName"))
        bad += [(doc["kind"], n) for n in names if n is not None and not isinstance(n, str)]
    assert bad == []

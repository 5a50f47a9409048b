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

import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "steadfast"
RELEASE = "steadfast"
NAMESPACE = "steadfast-system"


def helm_binary() -> str | None:
    configured = os.environ.get("STEADFAST_K8S_BIN")
    if configured:
        bin_dir = Path(configured)
    else:
        out = subprocess.run(
            [str(REPO / "hack" / "k8s-binaries"), "--print-bin-dir"],
            capture_output=True,
            text=True,
            check=False,
        )
        bin_dir = Path(out.stdout.strip())
    helm = bin_dir / "helm"
    return str(helm) if os.access(helm, os.X_OK) else None


HELM = helm_binary()
# A laptop without helm skips; CI must have it, so there the tests run and fail loudly.
needs_helm = pytest.mark.skipif(
    HELM is None and os.environ.get("CI", "").lower() != "true",
    reason="helm is not built yet: run hack/k8s-binaries (make k8s-binaries)",
)


def helm_template(
    *sets: str, values: dict[str, Any] | None = None, release: str = RELEASE
) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    args = [HELM, "template", release, str(CHART), "--namespace", NAMESPACE]
    for item in sets:
        args += ["--set", item]
    if values is not None:
        args += ["--values", "-"]
    return subprocess.run(
        args,
        input=yaml.safe_dump(values) if values is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HELM_CACHE_HOME": "/tmp/steadfast-helm-cache"},
    )


def render(*sets: str, values: dict[str, Any] | None = None, release: str = RELEASE) -> list[Any]:
    proc = helm_template(*sets, values=values, release=release)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def refused(*sets: str, values: dict[str, Any] | None = None) -> str:
    proc = helm_template(*sets, values=values)
    assert proc.returncode != 0, f"rendered although it should not:\n{proc.stdout[:400]}"
    return proc.stderr


def only(docs: list[Any], kind: str, pred: Callable[[Any], bool] = lambda _d: True) -> Any:
    found = [d for d in docs if d["kind"] == kind and pred(d)]
    assert len(found) == 1, f"{len(found)} {kind} rendered"
    return found[0]


def operator_container(docs: list[Any]) -> Any:
    deployment = only(docs, "Deployment", lambda d: d["metadata"]["name"].endswith("-operator"))
    return deployment["spec"]["template"]["spec"]["containers"][0]


def env_of(container: Any) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


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


def test_dashboards_carry_the_configurable_sidecar_label_and_the_exact_json() -> None:
    docs = render()
    maps = [d for d in docs if d["kind"] == "ConfigMap"]
    assert len(maps) == 2
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = cm["data"].items()
        assert text.strip() == (CHART / "dashboards" / key).read_text().strip()
        json.loads(text)
    custom = render(
        "dashboards.label=grafana_dashboard_steadfast",
        "dashboards.labelValue=yes",
        "dashboards.namespace=monitoring",
    )
    for cm in [d for d in custom if d["kind"] == "ConfigMap"]:
        assert cm["metadata"]["labels"]["grafana_dashboard_steadfast"] == "yes"
        assert "grafana_dashboard" not in cm["metadata"]["labels"]
        assert cm["metadata"]["namespace"] == "monitoring"
    assert not [d for d in render("dashboards.enabled=false") if d["kind"] == "ConfigMap"]


def test_prometheus_rule_is_the_alerts_file() -> None:
    rule = only(
        render("prometheusRule.enabled=true", "prometheusRule.labels.release=kps"), "PrometheusRule"
    )
    expected = yaml.safe_load((CHART / "alerts" / "steadfast.rules.yaml").read_text())
    assert rule["spec"]["groups"] == expected["groups"]
    assert rule["metadata"]["labels"]["release"] == "kps"


def test_monitors_select_the_operator_and_every_worker_pod() -> None:
    docs = render(
        "metrics.serviceMonitor.enabled=true",
        "workers.podMonitor.enabled=true",
        "metrics.serviceMonitor.labels.release=kps",
    )
    sm = only(docs, "ServiceMonitor")
    service = only(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["metadata"]["labels"]["release"] == "kps"
    pm = only(docs, "PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    assert pm["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": "steadfast-operator",
    }
    endpoints = pm["spec"]["podMetricsEndpoints"]
    assert [e["port"] for e in endpoints] == ["metrics", "sdk-metrics"]
    for endpoint in endpoints:
        (relabel,) = endpoint["relabelings"]
        assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_label_steadfast_dev_agent"]
        assert relabel["targetLabel"] == "agent"
    scoped = render(
        "workers.podMonitor.enabled=true",
        "watch.scope=namespaces",
        "watch.namespaces={research}",
    )
    assert only(scoped, "PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["research"]}


def test_operator_pod_monitor_is_the_alternative() -> None:
    pm = only(render("metrics.podMonitor.enabled=true"), "PodMonitor")
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_network_policies_allow_dns_api_server_and_temporal_only() -> None:
    docs = render("networkPolicy.enabled=true", "temporal.dev.enabled=true")
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {"steadfast-operator", "steadfast-temporal-dev"}
    operator = policies["steadfast-operator"]["spec"]
    assert operator["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = {p["port"] for rule in operator["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 443, 6443, 7233}
    ingress_ports = {p["port"] for rule in operator["ingress"] for p in rule["ports"]}
    assert ingress_ports == {"metrics", "health"}
    assert policies["steadfast-temporal-dev"]["spec"]["egress"] == []
    assert not [d for d in render() if d["kind"] == "NetworkPolicy"]


def test_every_name_fits_in_63_characters_for_a_long_release() -> None:
    release = "a-very-long-release-name-for-a-production-cluster-x"
    docs = render(
        "nameOverride=steadfast-research-agents-operator-chart",
        "temporal.dev.enabled=true",
        "metrics.serviceMonitor.enabled=true",
        "workers.podMonitor.enabled=true",
        "prometheusRule.enabled=true",
        "networkPolicy.enabled=true",
        release=release,
    )
    names = [d["metadata"]["name"] for d in docs]
    assert len(names) == len({(d["kind"], d["metadata"]["name"]) for d in docs})
    too_long = [n for n in names if len(n) > 63]
    assert not too_long, too_long
    assert all(not n.endswith("-") for n in names)
    assert any(n.endswith("-operator-metrics") for n in names)


def test_the_packaged_chart_ships_the_one_home_of_each_artefact(tmp_path: Path) -> None:
    """``helm package`` carries the canonical CRD, the dashboards and the alert rules.

    The CRD has its home in the top-level ``crds/`` (the chart's ``crds`` is a symlink,
    which Helm follows); the dashboards and alert rules live in the chart itself. The
    promtool tests beside the rules stay out of the package.
    """
    assert (CHART / "crds").is_symlink()
    assert (CHART / "crds").resolve() == (REPO / "crds").resolve()
    for gone in ("dashboards", "alerts"):
        assert not (REPO / gone).exists(), f"{gone}/ is back at the top level: one home only"
    assert HELM is not None
    proc = subprocess.run(
        [HELM, "package", str(CHART), "--destination", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HELM_CACHE_HOME": "/tmp/steadfast-helm-cache"},
    )
    assert proc.returncode == 0, proc.stderr
    (archive,) = tmp_path.glob("steadfast-*.tgz")
    with tarfile.open(archive) as tar:
        shipped = {
            m.name.removeprefix("steadfast/"): tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }
    expected = {f"crds/{p.name}": p.read_bytes() for p in sorted((REPO / "crds").glob("*.yaml"))}
    expected |= {
        f"dashboards/{p.name}": p.read_bytes() for p in (CHART / "dashboards").glob("*.json")
    }
    expected["alerts/steadfast.rules.yaml"] = (
        CHART / "alerts" / "steadfast.rules.yaml"
    ).read_bytes()
    assert "crds/researchagents.steadfast.dev.yaml" in expected
    for name, content in expected.items():
        assert shipped.get(name) == content, f"the packaged chart's {name} is not the tree's"
    assert not [n for n in shipped if n.startswith("alerts/tests/")]
    with_crds = subprocess.run(
        [HELM, "template", RELEASE, str(CHART), "--include-crds"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HELM_CACHE_HOME": "/tmp/steadfast-helm-cache"},
    )
    assert with_crds.returncode == 0, with_crds.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(with_crds.stdout) if d]
    assert kinds.count("CustomResourceDefinition") == 1

"""What the chart ships beside the operator: dashboards, alert rules, monitors,
NetworkPolicies and names that fit, and the packaged chart's one home of each artefact.

Like tests/unit/test_chart_render.py, these read `helm template` (or `helm package`)
output and need no cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from tests.support import chart

pytestmark = [pytest.mark.unit, chart.needs_helm]


def test_dashboards_carry_the_configurable_sidecar_label_and_the_exact_json() -> None:
    docs = chart.render()
    maps = [d for d in docs if d["kind"] == "ConfigMap"]
    assert len(maps) == 2
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = cm["data"].items()
        assert text.strip() == (chart.CHART / "dashboards" / key).read_text().strip()
        json.loads(text)
    custom = chart.render(
        "dashboards.label=grafana_dashboard_steadfast",
        "dashboards.labelValue=yes",
        "dashboards.namespace=monitoring",
    )
    for cm in [d for d in custom if d["kind"] == "ConfigMap"]:
        assert cm["metadata"]["labels"]["grafana_dashboard_steadfast"] == "yes"
        assert "grafana_dashboard" not in cm["metadata"]["labels"]
        assert cm["metadata"]["namespace"] == "monitoring"
    assert not [d for d in chart.render("dashboards.enabled=false") if d["kind"] == "ConfigMap"]


def test_prometheus_rule_is_the_alerts_file() -> None:
    rule = chart.only(
        chart.render("prometheusRule.enabled=true", "prometheusRule.labels.release=kps"),
        "PrometheusRule",
    )
    expected = yaml.safe_load((chart.CHART / "alerts" / "steadfast.rules.yaml").read_text())
    assert rule["spec"]["groups"] == expected["groups"]
    assert rule["metadata"]["labels"]["release"] == "kps"


def test_monitors_select_the_operator_and_every_worker_pod() -> None:
    docs = chart.render(
        "metrics.serviceMonitor.enabled=true",
        "workers.podMonitor.enabled=true",
        "metrics.serviceMonitor.labels.release=kps",
    )
    sm = chart.only(docs, "ServiceMonitor")
    service = chart.only(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["metadata"]["labels"]["release"] == "kps"
    pm = chart.only(docs, "PodMonitor")
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
    scoped = chart.render(
        "workers.podMonitor.enabled=true",
        "watch.scope=namespaces",
        "watch.namespaces={research}",
    )
    assert chart.only(scoped, "PodMonitor")["spec"]["namespaceSelector"] == {
        "matchNames": ["research"]
    }


def test_operator_pod_monitor_is_the_alternative() -> None:
    pm = chart.only(chart.render("metrics.podMonitor.enabled=true"), "PodMonitor")
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_network_policies_allow_dns_api_server_and_temporal_only() -> None:
    docs = chart.render("networkPolicy.enabled=true", "temporal.dev.enabled=true")
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {"steadfast-operator", "steadfast-temporal-dev"}
    operator = policies["steadfast-operator"]["spec"]
    assert operator["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = {p["port"] for rule in operator["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 443, 6443, 7233}
    ingress_ports = {p["port"] for rule in operator["ingress"] for p in rule["ports"]}
    assert ingress_ports == {"metrics", "health"}
    assert policies["steadfast-temporal-dev"]["spec"]["egress"] == []
    assert not [d for d in chart.render() if d["kind"] == "NetworkPolicy"]


def test_every_name_fits_in_63_characters_for_a_long_release() -> None:
    release = "a-very-long-release-name-for-a-production-cluster-x"
    docs = chart.render(
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
    assert (chart.CHART / "crds").is_symlink()
    assert (chart.CHART / "crds").resolve() == (chart.REPO / "crds").resolve()
    for gone in ("dashboards", "alerts"):
        assert not (chart.REPO / gone).exists(), f"{gone}/ is back at the top level: one home only"
    assert chart.HELM is not None
    proc = subprocess.run(
        [chart.HELM, "package", str(chart.CHART), "--destination", str(tmp_path)],
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
    expected = {
        f"crds/{p.name}": p.read_bytes() for p in sorted((chart.REPO / "crds").glob("*.yaml"))
    }
    expected |= {
        f"dashboards/{p.name}": p.read_bytes() for p in (chart.CHART / "dashboards").glob("*.json")
    }
    expected["alerts/steadfast.rules.yaml"] = (
        chart.CHART / "alerts" / "steadfast.rules.yaml"
    ).read_bytes()
    assert "crds/researchagents.steadfast.dev.yaml" in expected
    for name, content in expected.items():
        assert shipped.get(name) == content, f"the packaged chart's {name} is not the tree's"
    assert not [n for n in shipped if n.startswith("alerts/tests/")]
    with_crds = subprocess.run(
        [chart.HELM, "template", chart.RELEASE, str(chart.CHART), "--include-crds"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HELM_CACHE_HOME": "/tmp/steadfast-helm-cache"},
    )
    assert with_crds.returncode == 0, with_crds.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(with_crds.stdout) if d]
    assert kinds.count("CustomResourceDefinition") == 1

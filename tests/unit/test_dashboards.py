"""The Grafana dashboards' JSON, checked for the mistakes Grafana shows no error for.

A panel whose query names a metric nobody exports is silently empty, a duplicate
panel id makes Grafana drop one of them, and a variable a query uses but the
dashboard does not define turns the query into a syntax error at view time. The
worker's metric names are read from its own registry, so renaming one there
fails here. The JSON has one home, the chart's ``dashboards/``, which is what the
chart ships (tests/unit/test_chart_shipped.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from steadfast_operator import metrics as operator_metrics
from steadfast_worker.metrics import Metrics

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "charts" / "steadfast" / "dashboards"
FILES = sorted(DASHBOARDS.glob("*.json"))


def family_series(registry: CollectorRegistry) -> set[str]:
    """The sample names a registry's metric families produce once they have children."""
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    return names


def worker_metric_names() -> set[str]:
    """Series names the worker exposes, from the registry of a fresh Metrics."""
    return family_series(Metrics().registry)


def operator_metric_names() -> set[str]:
    """Series names the operator exposes, from its registry."""
    return family_series(operator_metrics.REGISTRY)


#: The Temporal Python SDK's own series (temporalio 1.35, PrometheusConfig with
#: counters_total_suffix=True as steadfast_worker.metrics.sdk_runtime sets it):
#: histograms are in milliseconds and carry no unit suffix, unlike the server's
#: metrics that Temporal's published dashboards use.
TEMPORAL_SDK_METRICS = {
    f"temporal_{base}_{suffix}"
    for base in (
        "activity_execution_latency",
        "activity_schedule_to_start_latency",
        "activity_succeed_endtoend_latency",
        "workflow_endtoend_latency",
        "workflow_task_execution_latency",
        "workflow_task_schedule_to_start_latency",
    )
    for suffix in ("bucket", "sum", "count")
} | {"temporal_workflow_completed_total", "temporal_workflow_failed_total"}

#: Prometheus' own per-target series.
PROMETHEUS_METRICS = {"up"}


def known_metric_names() -> set[str]:
    return (
        worker_metric_names() | operator_metric_names() | TEMPORAL_SDK_METRICS | PROMETHEUS_METRICS
    )


#: Operator series about the operator itself, not about one agent.
OPERATOR_GLOBAL_METRICS = {
    "steadfast_reconcile_total",
    "steadfast_reconcile_duration_seconds_bucket",
    "steadfast_operator_kube_requests_total",
    "steadfast_operator_task_queue_describes_total",
}

#: Grafana's built-in variables, which dashboards use but never define.
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__range_s"}

METRIC_TOKEN = re.compile(r"\b((?:steadfast|temporal)_[a-z0-9_]+|up)\b(?=\s*[{\[),])")
VARIABLE = re.compile(r"\$\{?(\w+)")


def metric_names_in(expr: str) -> set[str]:
    # Label values are quoted and may contain anything; drop them before scanning.
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(METRIC_TOKEN.findall(unquoted))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    out = [
        (f"panel {p['id']} {p['title']!r}", t["expr"])
        for p in panels(dashboard)
        for t in p.get("targets", [])
    ]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            out.append((f"variable {var['name']}", var["query"]["query"]))
    return out


def test_both_dashboards_exist_in_their_one_home() -> None:
    assert [p.name for p in FILES] == ["steadfast-cost.json", "steadfast-reliability.json"]
    # No second copy elsewhere in the tree to drift from the one the chart ships.
    tops = [d for d in REPO.iterdir() if d.is_dir() and not d.name.startswith(".")]
    copies = [
        p.relative_to(REPO)
        for top in tops
        for p in top.rglob("steadfast-*.json")
        if p.parent != DASHBOARDS and "fixtures" not in p.parts
    ]
    assert not copies, copies


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_panel_ids_are_unique_and_the_grid_does_not_overlap(path: Path) -> None:
    dashboard = load(path)
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    cells: dict[tuple[int, int], int] = {}
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]


def test_dashboard_uids_are_unique() -> None:
    uids = [load(p)["uid"] for p in FILES]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_variables_are_datasource_namespace_and_agent_and_chain(path: Path) -> None:
    variables = {v["name"]: v for v in load(path)["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "agent"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "agent"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"]["uid"] == "${datasource}"
        assert var["includeAll"], f"{name} must offer All"
        assert var["multi"], f"{name} must allow several values"
        assert var["allValue"] == ".*", "All must become a regex that the =~ matchers accept"
        assert var["query"]["query"] == var["definition"]
    # The agent list follows the chosen namespaces.
    assert "$namespace" in variables["agent"]["query"]["query"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_query_uses_only_defined_variables(path: Path) -> None:
    dashboard = load(path)
    defined = {v["name"] for v in dashboard["templating"]["list"]} | BUILTIN_VARIABLES
    for where, expr in queries(dashboard):
        undefined = set(VARIABLE.findall(expr)) - defined
        assert not undefined, f"{where} uses undefined variables {undefined}: {expr}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_panel_is_on_the_chosen_datasource_and_filters_by_namespace_and_agent(
    path: Path,
) -> None:
    for panel in panels(load(path)):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"{panel['title']!r} has no query"
        assert panel.get("description"), f"{panel['title']!r} has no description"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            # The operator's own series are global; everything else is per agent.
            if not metric_names_in(expr) <= OPERATOR_GLOBAL_METRICS:
                assert 'namespace=~"$namespace"' in expr, f"{panel['title']!r}: {expr}"
                assert 'agent=~"$agent"' in expr, f"{panel['title']!r}: {expr}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_query_references_only_known_metrics(path: Path) -> None:
    known = known_metric_names()
    for where, expr in queries(load(path)):
        used = metric_names_in(expr)
        assert used, f"{where} names no metric: {expr}"
        unknown = used - known
        assert not unknown, f"{where} uses unknown metrics {unknown}"


def test_the_metric_scanner_finds_names_and_ignores_label_values() -> None:
    expr = 'sum(rate(steadfast_llm_cost_usd_total{job="steadfast_fake_total"}[5m])) or up{}'
    assert metric_names_in(expr) == {"steadfast_llm_cost_usd_total", "up"}


def test_the_dashboards_cover_the_issue_list() -> None:
    """Cost and Reliability show what issue 5 lists: one metric per promised panel."""
    cost = " ".join(e for _, e in queries(load(DASHBOARDS / "steadfast-cost.json")))
    for metric in (
        "steadfast_llm_cost_usd_total",
        "steadfast_llm_tokens_total",
        "steadfast_run_cost_usd_bucket",
        "steadfast_llm_retry_cost_usd_total",
        "steadfast_agent_cost_usd",
    ):
        assert metric in cost, metric
    reliability = " ".join(e for _, e in queries(load(DASHBOARDS / "steadfast-reliability.json")))
    for metric in (
        "steadfast_activity_attempts_total",
        "steadfast_activity_retries_total",
        "steadfast_runs_total",
        "steadfast_task_queue_backlog",
        "steadfast_workers_desired",
        "steadfast_workers_ready",
        "steadfast_scale_events_total",
        "temporal_activity_execution_latency_bucket",
        "temporal_workflow_endtoend_latency_bucket",
    ):
        assert metric in reliability, metric


def test_the_operator_exports_every_metric_the_dashboards_need() -> None:
    used = {
        name
        for path in FILES
        for _, expr in queries(load(path))
        for name in metric_names_in(expr)
        if name.startswith("steadfast_")
    }
    assert used <= worker_metric_names() | operator_metric_names(), (
        used - worker_metric_names() - operator_metric_names()
    )

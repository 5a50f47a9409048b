"""The operator's metrics as Prometheus stores them when the chart's monitors scrape it.

The chart renders a ServiceMonitor (or a PodMonitor) for the operator, and the
Prometheus Operator turns it into a scrape job. Two things of that job decide what
the alerts and dashboards see, and neither shows in a test that scrapes with a
hand-written job:

* The job adds the target's own labels, ``namespace`` among them: the namespace of
  the operator's Service or pod. The operator's per-agent series carry the *agent's*
  ``namespace``. Unless the endpoint says ``honorLabels: true``, Prometheus keeps the
  target's and renames the series' to ``exported_namespace``, so every agent appears
  in the operator's namespace: same-named agents of two namespaces merge, alerts name
  the wrong namespace, and the dashboards' namespace list holds only the operator's.
* The ``job`` label is the Service's name (ServiceMonitor) or ``<namespace>/<name>``
  (PodMonitor), which follows the release's name and namespace: an alert that finds
  the operator by its job name goes wrong for some of them.

So the scrape jobs here are made from the rendered monitors as the Prometheus
Operator makes them (job label, target labels, ``honor_labels`` from the endpoint's
``honorLabels``, which defaults to false), and Debian's ``prometheus`` scrapes the
operator's real registry with the chart's alert rules loaded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server
from tests.support.chart import needs_helm, only, render
from tests.support.ports import free_port
from tests.support.prometheus import Prometheus, running_prometheus

from steadfast_operator import metrics

pytestmark = [pytest.mark.e2e, needs_helm]

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "charts" / "steadfast" / "alerts" / "steadfast.rules.yaml"
AGENT = "market-watch"


def rule(name: str) -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    (expr,) = [r["expr"] for g in groups for r in g["rules"] if r.get("alert") == name]
    return str(expr)


def job_of(docs: list[Any], monitor: str, address: str) -> dict[str, Any]:
    """The scrape job the Prometheus Operator makes of the chart's operator ``monitor``
    (ServiceMonitor or PodMonitor) for an operator pod at ``address``."""
    is_operator = lambda d: d["metadata"]["name"].endswith("-operator")  # noqa: E731
    found = only(docs, monitor, is_operator)
    namespace = found["metadata"]["namespace"]
    pod = {"pod": "steadfast-operator-0", "container": "operator"}
    if monitor == "ServiceMonitor":
        (endpoint,) = found["spec"]["endpoints"]
        service = only(docs, "Service", lambda d: d["metadata"]["name"].endswith("-metrics"))
        job = service["metadata"]["name"]
        labels = {"namespace": namespace, "service": job, "endpoint": endpoint["port"], **pod}
    else:
        (endpoint,) = found["spec"]["podMetricsEndpoints"]
        job = f"{namespace}/{found['metadata']['name']}"
        labels = {"namespace": namespace, "endpoint": endpoint["port"], **pod}
    return {
        "job_name": job,
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "static_configs": [{"targets": [address], "labels": labels}],
    }


def workers_job(docs: list[Any], address: str, namespace: str) -> dict[str, Any]:
    """The scrape job of the chart's worker PodMonitor for one worker pod."""
    found = only(docs, "PodMonitor", lambda d: d["metadata"]["name"].endswith("-workers"))
    labels = {"namespace": namespace, "agent": AGENT, "pod": f"{AGENT}-worker-0"}
    return {
        "job_name": f"{found['metadata']['namespace']}/{found['metadata']['name']}",
        "static_configs": [{"targets": [address], "labels": labels}],
    }


@contextlib.contextmanager
def serving(registry: CollectorRegistry) -> Iterator[str]:
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def two_agents_named_alike() -> Iterator[None]:
    """``market-watch`` in two namespaces: one has its workers, one is missing one."""
    agents = {"team-a": (2, 2), "team-b": (1, 0)}
    for namespace, (desired, ready) in agents.items():
        doc = {
            "workers": {"desired": desired, "ready": ready},
            "cost": {"totalUSD": 1.0, "todayUSD": 0.5},
        }
        metrics.export_agent(namespace, AGENT, doc, None, None)
    try:
        yield
    finally:
        for namespace in agents:
            metrics.forget_agent(namespace, AGENT, "")


def settled(prom: Prometheus, expr: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(prom.query(expr)) != count:
        assert time.monotonic() < deadline, f"never {count} series of {expr}"
        time.sleep(0.2)
    time.sleep(2)


@pytest.mark.parametrize("monitor", ["ServiceMonitor", "PodMonitor"])
def test_the_operators_per_agent_series_keep_the_agents_namespace(
    monitor: str, tmp_path: Path
) -> None:
    enabled = "serviceMonitor" if monitor == "ServiceMonitor" else "podMonitor"
    docs = render(f"metrics.{enabled}.enabled=true")
    with two_agents_named_alike(), serving(metrics.REGISTRY) as operator:
        job = job_of(docs, monitor, operator)
        with running_prometheus(tmp_path / "prom", {}, [RULES], jobs=[job]) as prom:
            settled(prom, "steadfast_workers_desired", 2)
            namespaces = {
                r["metric"].get("namespace") for r in prom.query("steadfast_workers_desired")
            }
            unavailable = prom.query(rule("SteadfastWorkersUnavailable"))
            print(f"{monitor}: namespaces {namespaces}; WorkersUnavailable gives {unavailable}")
            # The dashboards' namespace variable lists the agents' namespaces.
            assert namespaces == {"team-a", "team-b"}
            # The agent missing a worker is alerted on, in its own namespace.
            assert [(r["metric"]["namespace"], r["metric"]["agent"]) for r in unavailable] == [
                ("team-b", AGENT)
            ]


def test_operator_down_stays_silent_for_a_healthy_operator_whatever_the_release_name(
    tmp_path: Path,
) -> None:
    # "steadfast-prod" contains the chart's name, so the release's resources are
    # "steadfast-prod-*": its metrics Service is steadfast-prod-operator-metrics.
    docs = render("metrics.serviceMonitor.enabled=true", release="steadfast-prod")
    with serving(metrics.REGISTRY) as operator:
        job = job_of(docs, "ServiceMonitor", operator)
        with running_prometheus(tmp_path / "prom", {}, [RULES], jobs=[job]) as prom:
            settled(prom, "steadfast_operator_task_queue_describes_total", 1)
            down = prom.query(rule("SteadfastOperatorDown"))
            print(f"job {job['job_name']} up; OperatorDown gives {down}")
            assert down == []


def test_operator_down_fires_while_workers_are_up_in_a_namespace_named_after_it(
    tmp_path: Path,
) -> None:
    # Installed in namespace "steadfast-operator", with the workers' PodMonitor: its
    # job is "steadfast-operator/steadfast-workers".
    docs = render(
        "metrics.serviceMonitor.enabled=true",
        "workers.podMonitor.enabled=true",
        namespace="steadfast-operator",
    )
    nowhere = f"127.0.0.1:{free_port()}"  # the operator is down: nothing listens
    with serving(CollectorRegistry()) as worker:
        jobs = [job_of(docs, "ServiceMonitor", nowhere), workers_job(docs, worker, "research")]
        with running_prometheus(tmp_path / "prom", {}, [RULES], jobs=jobs, up=1) as prom:
            settled(prom, "up == 0", 1)
            down = prom.query(rule("SteadfastOperatorDown"))
            print(f"jobs {[j['job_name'] for j in jobs]}; OperatorDown gives {down}")
            assert len(down) == 1

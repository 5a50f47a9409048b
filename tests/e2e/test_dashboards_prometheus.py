"""Every dashboard panel's query returns data from a real Prometheus.

A dashboard can pass every JSON check and still show nothing: a label the
exporter never sets, a histogram without the suffix the query expects, a unit
the Temporal SDK does not use. So this test runs the whole pipeline for real:
the operator (``steadfast operator``) reconciles two ResearchAgents on the
loopback control plane and starts their workflows on the Temporal dev server;
two ``steadfast worker`` processes, configured from the same manifests the way
the operator's ConfigMap configures a pod, run them against the simulators
(with faults that cause retries, failed runs and an exhausted budget); Debian's
``prometheus`` scrapes the operator, both workers and their Temporal SDK
endpoints; then each panel's PromQL is sent to Prometheus' HTTP API.

The scrape configuration adds ``namespace`` and ``agent`` target labels to the
workers' endpoints, as the chart's worker PodMonitor does in a cluster. The work
arrives in two waves, so every counter increases while Prometheus watches it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.operator_env import STORE_SECRET, store_secret
from tests.support.kube import KubeCluster
from tests.support.ports import free_port
from tests.support.prometheus import Prometheus, finite
from tests.support.sim import SimHandle, running_sim
from tests.support.waiting import wait_for

from steadfast_contract import agentfile

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "charts" / "steadfast" / "dashboards").glob("*.json"))
SCRAPE_INTERVAL = "1s"


@contextlib.contextmanager
def process(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    """A child process that is stopped (SIGTERM, then SIGKILL) when the block ends."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            yield
            assert proc.poll() is None, f"{argv[:3]} exited early:\n{log.read_text()[-3000:]}"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def agent_manifest(name: str, namespace: str, temporal: str, sim: SimHandle, **spec: Any) -> Any:
    fast = {"initialInterval": "100ms", "backoffCoefficient": 1.0}
    body: dict[str, Any] = {
        "temporal": {"address": temporal, "namespace": "default"},
        "model": {
            "name": "claude-sonnet-4-6",
            "maxTokens": 1000,
            "baseURL": sim.llm_base_url,
            "apiKeySecretRef": {"name": "anthropic", "key": "api-key"},
        },
        "search": {"provider": "http", "endpoint": sim.search_url},
        "storage": {"postgresSecretRef": {"name": STORE_SECRET, "key": "dsn"}},
        "retryPolicies": {
            "llm": {**fast, "maximumAttempts": 5},
            "search": {**fast, "maximumAttempts": 2},
            "database": {**fast, "maximumAttempts": 3},
            "email": {"maximumAttempts": 1},
        },
        "workers": {"minReplicas": 0, "maxReplicas": 3, "scaleDownDelay": "5s"},
        **spec,
    }
    return {
        "apiVersion": "steadfast.dev/v1alpha1",
        "kind": "ResearchAgent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


@dataclass
class Ports:
    metrics: int
    sdk: int


def worker_config_file(manifest: Any, sim: SimHandle, tmp: Path, ports: Ports) -> Path:
    """The worker configuration the operator would put in the agent's ConfigMap."""
    name = manifest["metadata"]["name"]
    config = agentfile.worker_config_from_agent(
        manifest,
        model_base_url=sim.llm_base_url,
        search_endpoint=sim.search_url,
        sqlite_path=str(tmp / f"{name}.db"),
        metrics_port=ports.metrics,
        sdk_metrics_port=ports.sdk,
    )
    raw = config.model_dump(mode="json", by_alias=True)
    raw["worker"]["metricsHost"] = "127.0.0.1"
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(raw))
    return path


def prometheus_config(namespace: str, operator_port: int, workers: dict[str, Ports]) -> str:
    return yaml.safe_dump(
        {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": "1s"},
            "rule_files": [str(REPO / "charts" / "steadfast" / "alerts" / "steadfast.rules.yaml")],
            "scrape_configs": [
                {
                    # What the chart's ServiceMonitor makes of its metrics Service: the
                    # job named after the Service, the target's namespace (the operator's,
                    # not the agents'), and the series' own labels honoured.
                    "job_name": "steadfast-operator-metrics",
                    "honor_labels": True,
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{operator_port}"],
                            "labels": {"namespace": "steadfast-system"},
                        }
                    ],
                },
                {
                    "job_name": "steadfast-workers",
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{p.metrics}", f"127.0.0.1:{p.sdk}"],
                            "labels": {"namespace": namespace, "agent": agent},
                        }
                        for agent, p in workers.items()
                    ],
                },
            ],
        }
    )


def panel_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                where = f"{path.stem} / {panel['title']} / {target['refId']}"
                out.append((where, target["expr"], target.get("legendFormat", "")))
    return out


def substitute(expr: str, namespace: str) -> str:
    # Windows that span the whole run, so every counter's increase is inside them.
    return (
        expr.replace("$namespace", namespace)
        .replace("$agent", ".*")
        .replace("$__rate_interval", "5m")
        .replace("$__range", "10m")
    )


def test_every_dashboard_query_returns_data(
    kube_cluster: KubeCluster, namespace: str, temporal_address: str, tmp_path: Path
) -> None:
    prometheus_bin = shutil.which("prometheus")
    if prometheus_bin is None:
        pytest.fail("prometheus not found: install Debian's prometheus package", pytrace=False)
    kube_cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/researchagents.steadfast.dev", "--timeout=60s"
    )
    kube_cluster.kubectl(
        "create", "secret", "generic", "anthropic", "-n", namespace, "--from-literal=api-key=sk-x"
    )
    # The operator requires a durable store; the workers here save to SQLite files
    # (no DSN in their environment), which the dashboards do not look at.
    store_secret(kube_cluster, namespace)

    with running_sim() as sim:
        # Stream errors on the "retrytopic" runs (retries, and spend on failed attempts);
        # 400s from search on the "failtopic" runs (non-retryable: the run fails).
        sim.set_faults(
            {
                "llm": {"match": "retrytopic", "first_n": 2, "kind": "stream_error"},
                "search": {"match": "failtopic", "first_n": 5, "kind": "400"},
            }
        )
        steady = agent_manifest(
            "steady", namespace, temporal_address, sim,
            topics=["alpha retrytopic", "beta failtopic", "gamma plain"],
        )  # fmt: skip
        # Room for one call but not for the second: the run pauses on its budget, then
        # stops when the pause runs out.
        tight = agent_manifest(
            "tight", namespace, temporal_address, sim,
            topics=["delta plain"],
            budget={"maxUSDPerRun": 0.0155, "maxUSDPerDay": 5.0, "pauseTimeout": "1s"},
        )  # fmt: skip
        ports = {
            "steady": Ports(free_port(), free_port()),
            "tight": Ports(free_port(), free_port()),
        }
        operator_port, health_port, prom_port = free_port(), free_port(), free_port()
        prom_dir = tmp_path / "prometheus"
        prom_dir.mkdir()
        (prom_dir / "prometheus.yml").write_text(prometheus_config(namespace, operator_port, ports))
        worker_env = {**os.environ, "ANTHROPIC_API_KEY": "sk-x"}
        steadfast = [sys.executable, "-m", "steadfast_cli"]

        with contextlib.ExitStack() as stack:
            stack.enter_context(
                process(
                    [
                        *steadfast, "operator", "--kubeconfig", str(kube_cluster.kubeconfig),
                        "--namespace", namespace, "--listen", "127.0.0.1",
                        "--metrics-port", str(operator_port), "--health-port", str(health_port),
                        "--status-interval", "1", "--worker-image", "steadfast/worker:0.1.0",
                    ],
                    tmp_path / "operator.log",
                )
            )  # fmt: skip
            for manifest in (steady, tight):
                name = manifest["metadata"]["name"]
                config = worker_config_file(manifest, sim, tmp_path, ports[name])
                stack.enter_context(
                    process(
                        [*steadfast, "worker", "--config", str(config)],
                        tmp_path / f"worker-{name}.log",
                        env=worker_env,
                    )
                )
            stack.enter_context(
                process(
                    [
                        prometheus_bin, f"--config.file={prom_dir / 'prometheus.yml'}",
                        f"--storage.tsdb.path={prom_dir / 'data'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                    ],
                    tmp_path / "prometheus.log",
                )
            )  # fmt: skip
            prom = Prometheus(f"http://127.0.0.1:{prom_port}")
            wait_for("Prometheus ready", prom.ready, timeout=60)
            wait_for("all five targets up", lambda: len(prom.query("up == 1")) == 5, timeout=60)

            def runs_ended(agent: str, count: int) -> Callable[[], bool]:
                expr = f'sum(steadfast_runs_total{{namespace="{namespace}", agent="{agent}"}})'
                return lambda: finite(r := prom.query(expr)) and float(r[0]["value"][1]) >= count

            def wait_runs(what: str, agent: str, count: int) -> None:
                try:
                    wait_for(what, runs_ended(agent, count), timeout=180)
                except AssertionError as err:
                    agents = kube_cluster.kubectl("get", "ra", "-n", namespace, "-o", "yaml")
                    log = (tmp_path / "operator.log").read_text()[-4000:]
                    raise AssertionError(f"{err}\n{agents.stdout}\n--- operator\n{log}") from None

            kube_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([steady, tight]))
            wait_runs("the first wave of runs to end", "steady", 3)
            wait_runs("the tight agent's run to end", "tight", 1)
            # Second wave: more topics, so every counter grows while Prometheus watches.
            time.sleep(3)
            for name, topics in (
                ("steady", ["epsilon retrytopic", "zeta failtopic", "eta plain"]),
                ("tight", ["theta plain"]),
            ):
                patch = {"spec": {"topics": [*steady["spec"]["topics"], *topics]}}
                if name == "tight":
                    patch = {"spec": {"topics": [*tight["spec"]["topics"], *topics]}}
                kube_cluster.kubectl(
                    "patch", "researchagent", name, "-n", namespace, "--type=merge",
                    "-p", json.dumps(patch),
                )  # fmt: skip
            wait_runs("the second wave of runs to end", "steady", 6)
            wait_runs("the tight agent's second run", "tight", 2)
            time.sleep(5)

            empty = [
                f"{where}: {expr}"
                for where, expr, _legend in panel_queries()
                if not finite(prom.query(substitute(expr, namespace)))
            ]
            assert not empty, "panels without data:\n" + "\n".join(empty)

            here = f'namespace="{namespace}"'

            # What resuming saved: each retrytopic run's report failed twice after its
            # query call finished (a restart would have re-paid that call twice). The
            # panel shows it; the workers' counter equals the agents' status.avoidedUSD.
            def by_agent(expr: str) -> dict[str, float]:
                return {r["metric"]["agent"]: float(r["value"][1]) for r in prom.query(expr)}

            panel = next(e for w, e, _ in panel_queries() if "not re-paid thanks to resume" in w)
            assert by_agent(substitute(panel, namespace))["steady"] > 0
            counter = f"sum by (agent) (steadfast_llm_cost_avoided_usd_total{{{here}}})"

            def in_status(agent: str) -> float:
                ra = kube_cluster.kubectl_json("get", "researchagent", agent, "-n", namespace)
                return float(ra["status"].get("avoidedUSD", -1.0))

            wait_for(
                "the agents' status.avoidedUSD to equal what their workers counted",
                lambda: all(abs(in_status(a) - v) < 1e-6 for a, v in by_agent(counter).items()),
                timeout=30,
            )
            assert by_agent(counter)["tight"] == 0.0

            # The daily budget: the operator exports spec.budget.maxUSDPerDay, and
            # lowering steady's below what it has spent today exhausts it for the day.
            # (Tight's spend today is 0: a run stopped on its budget has no result,
            # so the operator's status counts no cost for it.)
            daily = f"max by (agent) (steadfast_agent_budget_usd{{{here}}})"
            assert {r["metric"]["agent"]: float(r["value"][1]) for r in prom.query(daily)} == {
                "steady": 50.0,
                "tight": 5.0,
            }
            today = prom.query(
                f'steadfast_agent_cost_usd{{{here}, agent="steady", window="today"}}'
            )
            spent = float(today[0]["value"][1])
            # Tight's per-run budget: one the operator accepts for this model and maxTokens.
            lowered = tight["spec"]["budget"]["maxUSDPerRun"]
            assert spent >= lowered, f"steady spent {spent} today, less than {lowered}"
            budget = {"maxUSDPerRun": lowered, "maxUSDPerDay": lowered}
            kube_cluster.kubectl(
                "patch", "researchagent", "steady", "-n", namespace, "--type=merge",
                "-p", json.dumps({"spec": {"budget": budget}}),
            )  # fmt: skip

            def daily_budget_alerts() -> set[tuple[str, str]]:
                return {
                    (a["labels"]["alertname"], a["labels"]["agent"])
                    for a in prom.get("/api/v1/alerts")["alerts"]
                    if a["labels"]["alertname"].startswith("SteadfastDailyBudget")
                    and a["state"] == "firing"
                }

            wait_for(
                "SteadfastDailyBudgetExhausted to fire for steady",
                lambda: ("SteadfastDailyBudgetExhausted", "steady") in daily_budget_alerts(),
                timeout=60,
            )
            assert daily_budget_alerts() == {("SteadfastDailyBudgetExhausted", "steady")}

            # The alert rules evaluate cleanly on live data, and the ones this run
            # provoked are active: a run stopped on its budget, a third of runs failed.
            rules = [r for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]]
            assert len(rules) == 8
            unhealthy = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
            assert not unhealthy, unhealthy
            active = {
                (a["labels"]["alertname"], a["labels"].get("agent"))
                for a in prom.get("/api/v1/alerts")["alerts"]
            }
            assert ("SteadfastBudgetExhausted", "tight") in active
            assert ("SteadfastRunsFailing", "steady") in active
            assert ("SteadfastRunsFailing", "tight") not in active
            # The operator is scraped, so OperatorDown stays silent.
            assert ("SteadfastOperatorDown", None) not in active

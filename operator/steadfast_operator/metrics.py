"""The operator's Prometheus metrics (docs/design.md §4), on a registry of its own.

A registry of its own keeps the operator's series apart from the worker's when
both run in one process (tests, ``steadfast dev``), and lets the operator drop
an agent's series when the agent is deleted. Labels carry namespace and agent,
never a workflow id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from steadfast_contract.spec import AgentSpec
    from steadfast_operator.status import QueueInfo

REGISTRY = CollectorRegistry(auto_describe=True)


def _agent_gauge(name: str, doc: str, *labels: str) -> Gauge:
    """A gauge per agent: ``namespace`` and ``agent`` first, then ``labels``."""
    return Gauge(name, doc, ["namespace", "agent", *labels], registry=REGISTRY)


RECONCILES = Counter(
    "steadfast_reconcile_total",
    "Reconciliations of ResearchAgents by handler and outcome.",
    ["handler", "outcome"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "steadfast_reconcile_duration_seconds",
    "Time spent in one reconciliation, by handler.",
    ["handler"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
BACKLOG = _agent_gauge(
    "steadfast_task_queue_backlog",
    "Approximate backlogged tasks (workflow and activity) of an agent's task queue.",
    "task_queue",
)
BACKLOG_AGE = _agent_gauge(
    "steadfast_task_queue_backlog_age_seconds",
    "Age of the oldest backlogged task of an agent's task queue.",
    "task_queue",
)
WORKERS_DESIRED = _agent_gauge(
    "steadfast_workers_desired",
    "Worker replicas the operator wants for an agent.",
)
WORKERS_READY = _agent_gauge(
    "steadfast_workers_ready",
    "Ready worker replicas of an agent.",
)
SCALE_EVENTS = Counter(
    "steadfast_scale_events_total",
    "Replica changes written by the built-in autoscaler, by direction.",
    ["namespace", "agent", "direction"],
    registry=REGISTRY,
)
AGENT_COST = _agent_gauge(
    "steadfast_agent_cost_usd",
    "An agent's LLM spend in USD as its status reports it, all time and today (UTC).",
    "window",
)
AGENT_BUDGET = _agent_gauge(
    "steadfast_agent_budget_usd",
    "An agent's daily LLM budget in USD: spec.budget.maxUSDPerDay of its last valid spec.",
)
DAY_SPENT = _agent_gauge(
    "steadfast_agent_daily_budget_exhausted",
    "1 while an agent's day cannot pay for another call (its BudgetExhausted condition): "
    "no new run starts until the next UTC day. Today's cost stays below the budget then, "
    "since each call is granted its worst case first, so the ratio of the two cannot say so.",
)
KUBE_REQUESTS = Counter(
    "steadfast_operator_kube_requests_total",
    "Kubernetes API requests made by the operator's own client, by verb.",
    ["verb"],
    registry=REGISTRY,
)
TEMPORAL_DESCRIBES = Counter(
    "steadfast_operator_task_queue_describes_total",
    "Task-queue describe round-trips to Temporal (shared across agents on a queue).",
    registry=REGISTRY,
)

_PER_AGENT = (WORKERS_DESIRED, WORKERS_READY, AGENT_BUDGET, DAY_SPENT)


def export_agent(
    namespace: str,
    name: str,
    doc: Mapping[str, Any],
    queue: QueueInfo | None,
    spec: AgentSpec | None,
) -> None:
    """Set the agent's gauges from the status just built and the spec in force.

    ``spec`` is the last spec that validated (the one the workers run with); the
    daily budget is not exported before there is one, because the schema's
    defaults that stand in for an invalid spec are nobody's budget.
    """
    if spec is not None:
        AGENT_BUDGET.labels(namespace, name).set(spec.budget.max_usd_per_day)
        DAY_SPENT.labels(namespace, name).set(1 if day_spent(doc) else 0)
    else:
        forget_budget(namespace, name)
    workers = doc.get("workers", {})
    WORKERS_DESIRED.labels(namespace, name).set(workers.get("desired", 0))
    WORKERS_READY.labels(namespace, name).set(workers.get("ready", 0))
    if "cost" in doc:
        AGENT_COST.labels(namespace, name, "total").set(doc["cost"]["totalUSD"])
        AGENT_COST.labels(namespace, name, "today").set(doc["cost"]["todayUSD"])
    if queue is not None:
        BACKLOG.labels(namespace, name, queue.name).set(queue.backlog)
        BACKLOG_AGE.labels(namespace, name, queue.name).set(queue.backlog_age_seconds)


def forget_agent(namespace: str, agent: str, task_queue: str) -> None:
    """Drop a deleted agent's series so dashboards do not show it forever."""
    for gauge in _PER_AGENT:
        _remove(gauge, namespace, agent)
    for window in ("total", "today"):
        _remove(AGENT_COST, namespace, agent, window)
    for g in (BACKLOG, BACKLOG_AGE):
        _remove(g, namespace, agent, task_queue)
    for direction in ("up", "down"):
        _remove(SCALE_EVENTS, namespace, agent, direction)


def forget_budget(namespace: str, agent: str) -> None:
    """Drop an agent's daily-budget series (no spec has validated yet)."""
    _remove(AGENT_BUDGET, namespace, agent)
    _remove(DAY_SPENT, namespace, agent)


def day_spent(doc: Mapping[str, Any]) -> bool:
    """Whether the status says the day is spent: its ``BudgetExhausted`` condition."""
    return any(
        c.get("type") == "BudgetExhausted" and c.get("status") == "True"
        for c in doc.get("conditions") or ()
    )


def _remove(metric: Gauge | Counter, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


def serve(port: int, host: str = "0.0.0.0") -> None:
    """Expose ``/metrics``; port 0 disables it."""
    if port:
        start_http_server(port, addr=host, registry=REGISTRY)

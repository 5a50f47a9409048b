"""The operator's per-agent gauges: what the daily-budget panel and alerts divide."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from steadfast_operator import metrics, render
from steadfast_operator.spec import parse_spec

pytestmark = pytest.mark.unit

AGENT = render.AgentRef(name="market-watch", namespace="research", uid="uid-1")
LABELS = {"namespace": "research", "agent": "market-watch"}
DOC: dict[str, Any] = {
    "workers": {"desired": 1, "ready": 1},
    "cost": {"totalUSD": 12.5, "todayUSD": 4.5},
}


def sample(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, {**LABELS, **labels})


@pytest.fixture(autouse=True)
def _clean() -> Any:
    metrics.forget_agent(AGENT.namespace, AGENT.name, "q")
    yield
    metrics.forget_agent(AGENT.namespace, AGENT.name, "q")


def test_the_budget_gauge_is_the_specs_max_usd_per_day() -> None:
    spec = parse_spec(
        "research", "market-watch", {"topics": ["x"], "budget": {"maxUSDPerDay": 7.5}}
    )
    metrics.export_agent(AGENT.namespace, AGENT.name, DOC, None, spec)
    assert sample("steadfast_agent_budget_usd") == 7.5
    # What the daily-budget panel and alerts divide: today's spend by the budget.
    assert sample("steadfast_agent_cost_usd", window="today") == 4.5

    raised = parse_spec(
        "research", "market-watch", {"topics": ["x"], "budget": {"maxUSDPerDay": 20}}
    )
    metrics.export_agent(AGENT.namespace, AGENT.name, DOC, None, raised)
    assert sample("steadfast_agent_budget_usd") == 20


def test_the_budget_gauge_uses_the_schema_default_when_the_spec_sets_none() -> None:
    spec = parse_spec("research", "market-watch", {"topics": ["x"]})
    metrics.export_agent(AGENT.namespace, AGENT.name, DOC, None, spec)
    assert sample("steadfast_agent_budget_usd") == spec.budget.max_usd_per_day == 50.0


def test_no_budget_series_without_a_valid_spec() -> None:
    metrics.export_agent(AGENT.namespace, AGENT.name, DOC, None, None)
    assert sample("steadfast_agent_budget_usd") is None
    assert sample("steadfast_workers_desired") == 1


def test_deleting_the_agent_drops_its_budget_series() -> None:
    spec = parse_spec("research", "market-watch", {"topics": ["x"]})
    metrics.export_agent(AGENT.namespace, AGENT.name, DOC, None, spec)
    metrics.forget_agent(AGENT.namespace, AGENT.name, "q")
    assert sample("steadfast_agent_budget_usd") is None
    assert sample("steadfast_agent_cost_usd", window="today") is None


def test_the_budget_carries_the_cost_gauges_labels_but_the_window() -> None:
    """``max by (namespace, agent)`` on both sides of the division must match."""
    budget = set(metrics.AGENT_BUDGET._labelnames)
    cost = set(metrics.AGENT_COST._labelnames)
    assert budget == cost - {"window"} == {"namespace", "agent"}


def test_the_series_the_operator_down_alert_reads_is_there_from_the_start() -> None:
    # SteadfastOperatorDown is absent(steadfast_operator_task_queue_describes_total):
    # the series must exist, without labels, before any agent or describe.
    value = metrics.REGISTRY.get_sample_value("steadfast_operator_task_queue_describes_total")
    assert value is not None
    rules = Path(__file__).resolve().parents[2] / "charts/steadfast/alerts/steadfast.rules.yaml"
    assert "absent(steadfast_operator_task_queue_describes_total)" in rules.read_text()


def test_a_spent_day_is_a_gauge_of_its_own() -> None:
    """A spent day settles below its budget (each call is granted its worst case first):
    $49.99 of $50 is spent when a call needs $0.03. The critical alert divided today's
    cost by the budget and waited for 1, which never came (the audit); it reads this."""
    spec = parse_spec("research", "market-watch", {"topics": ["x"], "budget": {"maxUSDPerDay": 50}})
    spent = {
        **DOC,
        "cost": {"totalUSD": 49.99, "todayUSD": 49.99},
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "BudgetExhausted", "status": "True", "reason": "DailyBudgetReached"},
        ],
    }
    metrics.export_agent(AGENT.namespace, AGENT.name, spent, None, spec)
    assert sample("steadfast_agent_daily_budget_exhausted") == 1
    assert sample("steadfast_agent_cost_usd", window="today") == 49.99
    left = {**spent, "conditions": [{"type": "BudgetExhausted", "status": "False"}]}
    metrics.export_agent(AGENT.namespace, AGENT.name, left, None, spec)
    assert sample("steadfast_agent_daily_budget_exhausted") == 0
    metrics.export_agent(AGENT.namespace, AGENT.name, left, None, None)
    assert sample("steadfast_agent_daily_budget_exhausted") is None

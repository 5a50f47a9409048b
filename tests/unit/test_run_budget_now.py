"""What a retried LLM request is checked against: the run's limits as they are now."""

from __future__ import annotations

import pytest

from steadfast_contract.activities import RunBudget
from steadfast_contract.models import RunStatus
from steadfast_worker.activities.runbudget import budget_now

pytestmark = pytest.mark.unit

SCHEDULED = RunBudget(spent_usd=0.10, limit_usd=1.0, day_limit_usd=50.0, ledger="ns/a@q")


def status(
    cost_usd: float = 0.0, max_usd_per_run: float = 0.0, max_usd_per_day: float = 0.0
) -> RunStatus:
    return RunStatus(
        topic="t",
        cost_usd=cost_usd,
        max_usd_per_run=max_usd_per_run,
        max_usd_per_day=max_usd_per_day,
    )


def test_lowered_limits_apply() -> None:
    now = budget_now(SCHEDULED, status(cost_usd=0.1, max_usd_per_run=0.2, max_usd_per_day=5.0))
    assert (now.limit_usd, now.day_limit_usd) == (0.2, 5.0)
    assert now.ledger == "ns/a@q"


def test_raised_limits_apply() -> None:
    now = budget_now(SCHEDULED, status(cost_usd=0.1, max_usd_per_run=3.0, max_usd_per_day=80.0))
    assert (now.limit_usd, now.day_limit_usd) == (3.0, 80.0)


def test_spend_of_other_activities_since_counts_and_spend_never_shrinks() -> None:
    assert budget_now(SCHEDULED, status(cost_usd=0.4, max_usd_per_run=1.0)).spent_usd == 0.4
    assert budget_now(SCHEDULED, status(cost_usd=0.0, max_usd_per_run=1.0)).spent_usd == 0.10


def test_a_limit_the_status_does_not_state_stays_as_scheduled() -> None:
    now = budget_now(SCHEDULED, status(cost_usd=0.1))
    assert (now.limit_usd, now.day_limit_usd) == (1.0, 50.0)


def test_a_run_without_a_day_ledger_gets_none() -> None:
    scheduled = RunBudget(spent_usd=0.0, limit_usd=1.0)
    now = budget_now(scheduled, status(max_usd_per_run=1.0, max_usd_per_day=9.0))
    assert now.day_limit_usd == 0.0

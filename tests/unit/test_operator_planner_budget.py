"""The planner's budget decisions, as tables: an edited budget passed on to running
runs, and the day's spend read from the day's ledger.

Each row: the running run's own limits and spend as its ``status`` reported them,
and the ``budget`` update the plan must hold for it (written out, never computed
with the planner).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.support.planning import ID, condition, observed, raw_spec, run, view

from steadfast_contract.starter import RunRow
from steadfast_operator import planner
from steadfast_operator.budgets import BudgetPush
from steadfast_operator.planner import Start
from steadfast_operator.status import Problem

pytestmark = pytest.mark.unit

#: The spec of these rows: maxUSDPerRun 2.0, maxUSDPerDay 5.0.
SPEC = raw_spec(budget={"maxUSDPerRun": 2.0, "maxUSDPerDay": 5.0})


def running(
    run_usd: float, day_usd: float, spent: float = 0.1, phase: str = "AwaitingBudget"
) -> RunRow:
    row = run("alpha", cost=spent, done=False)
    return replace(row, phase=phase, max_usd_per_run=run_usd, max_usd_per_day=day_usd)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # A paused run started under the old limits gets both.
        (
            running(1.0, 1.0),
            (BudgetPush(ID["alpha"], "run-alpha", 2.0, 5.0),),
        ),
        # Only what differs is sent.
        (running(1.0, 5.0), (BudgetPush(ID["alpha"], "run-alpha", 2.0, None),)),
        (running(2.0, 1.0), (BudgetPush(ID["alpha"], "run-alpha", None, 5.0),)),
        # Already in line: nothing.
        (running(2.0, 5.0), ()),
        # A working run (not paused) is told too: its next call is checked against it.
        (running(1.0, 5.0, phase="Writing"), (BudgetPush(ID["alpha"], "run-alpha", 2.0, None),)),
        # Lowered below what the run already spent: it gets the limit at its spend (its
        # update refuses any lower), which stops its next call; before, it kept $3.
        (running(3.0, 5.0, spent=2.5), (BudgetPush(ID["alpha"], "run-alpha", 2.5, None),)),
        # ... and nothing more once it holds it.
        (running(2.5, 5.0, spent=2.5), ()),
        # A run without a daily ledger (recorded before it existed) gets no day limit.
        (running(1.0, 0.0), (BudgetPush(ID["alpha"], "run-alpha", 2.0, None),)),
        # Limits unknown (no worker answered its status query): nothing to compare.
        (running(0.0, 0.0), ()),
        # A closed run is never updated.
        (replace(run("alpha", cost=0.1), max_usd_per_run=1.0, max_usd_per_day=1.0), ()),
    ],
)
def test_running_runs_get_the_specs_budget(row: RunRow, expected: tuple[BudgetPush, ...]) -> None:
    plan = planner.plan(observed(SPEC, temporal=view(row, run("beta"))))
    assert plan.budgets == expected


def test_no_budget_is_pushed_while_the_agent_has_a_problem() -> None:
    obs = observed(SPEC, temporal=view(running(1.0, 1.0)), problem=Problem("SecretMissing", "x"))
    assert planner.plan(obs).budgets == ()


@pytest.mark.parametrize(
    ("ledger_usd", "starts", "exhausted", "today"),
    [
        # The day's ledger holds spend of topics renamed or removed since: the day is spent.
        (1.2, (), ("True", "DailyBudgetReached"), 1.2),
        # Less left than the least a call reserves (2000 tokens at $15/MTok): spent too.
        (0.98, (), ("True", "DailyBudgetReached"), 0.98),
        # The ledger below what today's runs show (runs from before it existed): runs count.
        (0.05, (Start("beta", ID["beta"]),), ("False", "WithinBudget"), 0.2),
        # Not read (no worker to answer): today's runs, as before.
        (None, (Start("beta", ID["beta"]),), ("False", "WithinBudget"), 0.2),
    ],
)
def test_the_days_ledger_is_what_the_day_spent(
    ledger_usd: float | None,
    starts: tuple[Start, ...],
    exhausted: tuple[str, str],
    today: float,
) -> None:
    temporal = replace(view(run("alpha", cost=0.2)), ledger_usd=ledger_usd)
    plan = planner.plan(observed(temporal=temporal))  # maxUSDPerDay 1.0
    assert plan.start == starts
    assert condition(plan, "BudgetExhausted") == exhausted
    assert plan.status is not None
    assert plan.status["cost"]["todayUSD"] == today

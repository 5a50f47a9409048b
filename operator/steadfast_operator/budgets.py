"""Which running runs need the agent's budget passed on: a pure decision of the planner.

A run carries its limits in its input, recorded when it started; an edit of
``spec.budget.maxUSDPerRun`` or ``maxUSDPerDay`` reaches the runs already going
only through their ``budget`` update (docs/design.md §2). A run paused in
``AwaitingBudget`` resumes when the raise fits its next call. The planner asks
:func:`pushes` each pass; the executor sends the updates
(:func:`steadfast_operator.workflows.set_budgets`).

A run is told only what it would accept: its own limits must be known (its
``status`` query answered this pass) and differ, and a run limit is never sent
below what the run already spent (its update would refuse it every tick): a run
that spent more than the new limit gets the limit at its spend, which stops its
next call, as the new limit would.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from steadfast_contract.budget import one_call_usd
from steadfast_contract.pricing import UnknownModelError, lookup
from steadfast_contract.spec import AgentSpec
from steadfast_contract.starter import RunRow

#: Dollar amounts closer than this are the same limit (float round trips).
_SAME = 1e-9


def call_floor_usd(spec: AgentSpec) -> float:
    """The least any call of the agent reserves: ``maxTokens`` at the output price.

    A day with less than this left cannot pay for another call, so it is spent: no
    new run starts (it would only pause). 0 for a model without a price (such a
    spec is refused anyway).
    """
    if spec.model.pricing:
        return one_call_usd(spec.model.max_tokens, spec.model.pricing.output_per_m_tok)
    try:
        return one_call_usd(spec.model.max_tokens, lookup(spec.model.name).output_per_mtok)
    except UnknownModelError:
        return 0.0


@dataclass(frozen=True)
class BudgetPush:
    """New limits for one running run (``None``: leave that one as it is)."""

    workflow_id: str
    run_id: str
    max_usd_per_run: float | None
    max_usd_per_day: float | None


def pushes(spec: AgentSpec, runs: Iterable[RunRow]) -> tuple[BudgetPush, ...]:
    """The ``budget`` updates that bring running runs to the spec's limits."""
    per_run, per_day = spec.budget.max_usd_per_run, spec.budget.max_usd_per_day
    out = []
    for r in runs:
        if not r.running or r.terminal or r.max_usd_per_run <= 0:
            continue  # closed, or its limits are not known this pass
        # Never below what the run spent (its update refuses that): there, it stops the
        # run's next call, which is what a limit lowered under its spend means.
        target = max(per_run, r.cost_usd)
        run_limit = target if abs(r.max_usd_per_run - target) > _SAME else None
        day_limit = (
            per_day if r.max_usd_per_day > 0 and abs(r.max_usd_per_day - per_day) > _SAME else None
        )
        if run_limit is not None or day_limit is not None:
            out.append(BudgetPush(r.workflow_id, r.run_id, run_limit, day_limit))
    return tuple(out)

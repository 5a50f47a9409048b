"""A budget stop pauses the run before the call; a raise resumes it, a timeout ends it.

docs/design.md §3: a run that cannot afford its next LLM call waits in phase
``AwaitingBudget`` (step kept, status and metrics say which budget stopped it) for
up to ``budget.pauseTimeout``. ``steadfast budget`` (the ``budget`` update) raises
it and the run goes on: the simulator's request log shows every LLM call of the
run served exactly once, so nothing paid for was asked again. A wait that runs
out ends the run ``BudgetExhausted``. The update refuses a limit below what the
run spent, and a run that is over.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError
from tests.integration.conftest import HarnessFactory
from tests.integration.test_deep_agent import billed_usd, deep, plan
from tests.support.temporal import failure_of

from steadfast_cli.commands.budget import set_budget
from steadfast_contract import budget, pricing
from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus
from steadfast_contract.spec import AgentSpec
from steadfast_operator import budgets, workflows
from steadfast_worker.pipeline import QUERY_PROMPT_CHARS

pytestmark = [pytest.mark.integration, pytest.mark.hostile]


def squeezed_limit() -> float:
    """Room for the query call's reservation, not for the report's."""
    price = pricing.lookup("claude-sonnet-4-6")
    return budget.reserve_usd(1000, budget.estimate_tokens(QUERY_PROMPT_CHARS), price) * 1.05


async def wait_paused(handle: WorkflowHandle[Any, Any], deadline: float = 20.0) -> RunStatus:
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        if status.phase == Phase.AWAITING_BUDGET:
            return status
        assert not status.phase.terminal, status
        await asyncio.sleep(0.1)
    raise AssertionError(f"{handle.id} never paused for its budget")


async def test_a_paused_run_resumes_on_a_raise_and_pays_nothing_twice(
    harness: HarnessFactory,
) -> None:
    limit = squeezed_limit()
    async with harness({"budget": {"maxUSDPerRun": limit, "pauseTimeout": "1h"}}) as h:
        handle = await h.start("paused then raised")
        paused = await wait_paused(handle)
        assert (paused.step, paused.stopped_by) == (3, "run")  # before the report's call
        assert "raise it with `steadfast budget`" in paused.message
        assert h.metric("steadfast_budget_pauses_total", budget="run") == 1
        served_before = dict(h.sim.served("llm"))
        assert served_before
        assert all(k.startswith(handle.id) for k in served_before)

        # Lowering below what the run spent is refused, with the reason.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await set_budget(h.client, handle.id, max_usd=paused.cost_usd / 2)
        assert "cannot go below" in str(refused.value.cause)

        answer = await set_budget(h.client, handle.id, max_usd=1.0)
        assert answer.accepted
        assert answer.max_usd_per_run == 1.0
        result = await asyncio.wait_for(handle.result(), 30)

        assert result.status.phase == Phase.COMPLETED
        assert result.status.max_usd_per_run == 1.0
        served = Counter({k: n for k, n in h.sim.served("llm").items() if k.startswith(handle.id)})
        assert served, "the run made no LLM call"
        assert max(served.values()) == 1, served  # every call served once
        for key, count in served_before.items():
            assert served[key] == count  # the calls before the pause were not asked again
        # A closed run takes no new budget (Temporal itself answers for a closed workflow).
        with pytest.raises((WorkflowUpdateFailedError, RPCError), match="completed"):
            await set_budget(h.client, handle.id, max_usd=2.0)


async def test_a_paused_run_ends_budget_exhausted_when_the_wait_runs_out(
    harness: HarnessFactory,
) -> None:
    wait = 2.0
    overrides = {"budget": {"maxUSDPerRun": squeezed_limit(), "pauseTimeout": f"{wait}s"}}
    async with harness(overrides) as h:
        handle = await h.start("paused then expired")
        await wait_paused(handle)
        paused_at = time.monotonic()
        cause = await failure_of(handle)
        waited = time.monotonic() - paused_at
        assert (cause.type, cause.non_retryable) == ("BudgetExhausted", True)
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert (status.phase, status.step, status.stopped_by) == (
            Phase.BUDGET_EXHAUSTED,
            3,
            "run",
        )
        assert waited >= wait - 0.5, waited
        assert not [k for k in h.sim.served("llm") if "/ask" not in k and k.startswith(handle.id)]
        assert h.metric("steadfast_budget_exhausted_total") == 1
        with pytest.raises(WorkflowFailureError):
            await handle.result()


async def test_a_limit_lowered_under_a_runs_spend_stops_its_next_call(
    harness: HarnessFactory,
) -> None:
    """The operator's pass when ``maxUSDPerRun`` is edited below what a running run
    spent: the run gets the limit at its spend, which stops its next call. Before, it
    was sent nothing (its update refuses a limit under its spend) and spent on to the
    limit it started with. The pass is sent after the run spent more than the plan
    read (a call ended in between), as a slow pass can be: the run refuses the plan's
    figure, and gets its new spend instead."""
    topic = "lowered under its spend"
    overrides = {
        **deep(20),
        "budget": {"maxUSDPerRun": 1.0, "pauseTimeout": "0s"},
    }
    async with harness(overrides) as h:
        h.sim.set_faults(plan(20, latency_ms=1000))
        handle = await h.start(topic)
        for _ in range(600):
            status = await handle.query(STATUS_QUERY, result_type=RunStatus)
            if status.llm_calls >= 2:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the run never made two calls")
        rows = await workflows.observe(
            h.client, h.config, [topic], workflows.RunCache(), query_running=True
        )
        edited = AgentSpec.model_validate(
            {"topics": [topic], "budget": {"maxUSDPerRun": 0.001, "maxUSDPerDay": 50.0}}
        )
        plan_ = budgets.pushes(edited, rows)
        assert [p.max_usd_per_run for p in plan_] == [rows[0].cost_usd]
        for _ in range(600):  # the call in flight ends: the plan's figure is stale
            status = await handle.query(STATUS_QUERY, result_type=RunStatus)
            if status.cost_usd > rows[0].cost_usd:
                break
            await asyncio.sleep(0.05)
        assert await workflows.set_budgets(h.client, plan_) == 1
        limit = (await handle.query(STATUS_QUERY, result_type=RunStatus)).max_usd_per_run
        assert limit >= status.cost_usd > rows[0].cost_usd
        cause = await failure_of(handle)
        assert cause.type == "BudgetExhausted"
        entries = [e for e in h.sim.entries("llm") if e["key"].startswith(handle.id)]
        calls = [billed_usd(h, [e]) for e in entries if e["billed"]]
        print(f"lowered at ${limit:.4f}: {len(calls)} calls, ${sum(calls):.4f}")
        assert sum(calls) <= limit + max(calls)  # and the call in flight


async def test_an_edit_of_max_usd_per_run_reaches_a_paused_run(harness: HarnessFactory) -> None:
    """The operator's pass: observe the agent's runs, plan, send the budget update."""
    limit = squeezed_limit()
    topic = "paused then edited"
    async with harness({"budget": {"maxUSDPerRun": limit, "pauseTimeout": "1h"}}) as h:
        handle = await h.start(topic)
        await wait_paused(handle)
        rows = await workflows.observe(
            h.client, h.config, [topic], workflows.RunCache(), query_running=True
        )
        assert [(r.phase, r.max_usd_per_run) for r in rows] == [("AwaitingBudget", limit)]

        edited = AgentSpec.model_validate(
            {"topics": [topic], "budget": {"maxUSDPerRun": 1.0, "maxUSDPerDay": 50.0}}
        )
        plan = budgets.pushes(edited, rows)
        assert await workflows.set_budgets(h.client, plan) == 1
        result = await asyncio.wait_for(handle.result(), 30)
        assert result.status.phase == Phase.COMPLETED
        served = [n for k, n in h.sim.served("llm").items() if k.startswith(handle.id)]
        assert served
        assert max(served) == 1

"""A last turn's set-aside reply is counted once, across a budget pause and a raise.

The last turn must write the report: a reply that calls tools anyway is paid for,
stored as the turn's ``set-aside`` part, counted as spend that produced nothing, and
the report is asked for again without tools (docs/deep-agent.md, "The last turn").
When the budget refuses that second request, the activity fails for good with what
it spent (the set-aside reply included), and the run pauses. A raise schedules the
turn anew; that new activity finds the set-aside part and asks without tools at
once. It counted the part's cost again, as if its own earlier attempt had set it
aside and been lost before a heartbeat said so: the run overstated its spend by
the set-aside reply, and paused or stopped that much sooner.
"""

from __future__ import annotations

import asyncio

import pytest
from tests.integration.conftest import HarnessFactory
from tests.integration.test_deep_agent import billed_usd, deep, plan

from steadfast_contract.models import (
    BUDGET_UPDATE,
    STATUS_QUERY,
    Phase,
    RunStatus,
    SetBudgetInput,
    SetBudgetResult,
)

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(180)]


async def test_a_set_aside_reply_is_counted_once_across_a_pause(harness: HarnessFactory) -> None:
    async with harness({**deep(2), "budget": {"maxUSDPerRun": 1.0}}) as h:
        # The last turn calls tools anyway; every reply streams for a couple of seconds.
        h.sim.set_faults(plan(20, agent_finishes_when_asked=False, chunk_delay_ms=250))
        handle = await h.start("the set-aside reply and the pause")
        for _ in range(1200):
            if any(e["key"].endswith("/turn2") for e in h.sim.entries("llm")):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("turn 2 was never asked")
        # While turn 2's first reply streams, the run's limit comes down to what it
        # spent: the report asked for again without tools no longer fits.
        st = await handle.query(STATUS_QUERY, result_type=RunStatus)
        await handle.execute_update(
            BUDGET_UPDATE,
            SetBudgetInput(max_usd_per_run=st.cost_usd + 0.001),
            result_type=SetBudgetResult,
        )
        for _ in range(1200):
            st = await handle.query(STATUS_QUERY, result_type=RunStatus)
            if st.phase == Phase.AWAITING_BUDGET:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the run never paused: {st.phase}")
        mine = [e for e in h.sim.entries("llm") if e["key"].startswith(handle.id)]
        assert [e["key"].rsplit("/", 1)[1] for e in mine] == ["turn1", "turn2"]
        assert st.cost_usd == pytest.approx(billed_usd(h, mine), rel=1e-9)
        h.sim.set_faults(plan(20, agent_finishes_when_asked=False, chunk_delay_ms=0))
        await handle.execute_update(
            BUDGET_UPDATE, SetBudgetInput(max_usd_per_run=1.0), result_type=SetBudgetResult
        )
        result = await asyncio.wait_for(handle.result(), 60)
        st = result.status
        assert st.phase == Phase.COMPLETED, st.message
        mine = [e for e in h.sim.entries("llm") if e["key"].startswith(handle.id)]
        assert [e["key"].rsplit("/", 1)[1] for e in mine] == ["turn1", "turn2", "ask1"]
        assert all(e["outcome"] == "served" for e in mine)
        billed = billed_usd(h, mine)
        set_aside = billed_usd(h, [mine[1]])
        print(f"run ${st.cost_usd:.6f}; billed ${billed:.6f}; set aside ${set_aside:.6f}")
        assert st.cost_usd == pytest.approx(billed, rel=1e-9)
        assert st.finished_usd == pytest.approx(billed - set_aside, rel=1e-9)

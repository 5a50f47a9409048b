"""The daily budget is a limit: every LLM request is granted from the agent's day first.

docs/design.md §2: ``maxUSDPerDay`` bounds what an agent spends on a UTC day,
whoever starts its runs (``steadfast run``, the operator, a Schedule firing while
no operator runs) and however many start at once. Twenty topics that cost about
a fifth of the day each are started together: what the simulator bills for all
of them stays within the day's budget plus the worst case of one call (the
reservations cover the calls in flight; only an input estimate can be short),
the runs it could not pay for pause (phase ``AwaitingBudget``, ``stoppedBy:
day``) and end ``BudgetExhausted`` when ``pauseTimeout`` runs out. A topic with a
new name, and a run its Schedule starts with no operator anywhere, find the same
spent day: nothing resets it but the date. The operator reads the day's spend
from the same ledger.

Every spend figure is the simulator's own billing.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError
from tests.integration.conftest import Harness, HarnessFactory
from tests.integration.test_budget_pause import squeezed_limit, wait_paused
from tests.integration.test_budget_per_call import billed_usd, one_call_usd

from steadfast_cli.commands.budget import set_budget
from steadfast_contract import ids
from steadfast_contract.ledger import LEDGER_QUERY, LedgerState
from steadfast_contract.models import STATUS_QUERY, Phase, ResearchResult, RunStatus
from steadfast_contract.pricing import WEB_SEARCH_USD_PER_REQUEST
from steadfast_operator import schedules, workflows

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

TOPICS = 20
#: About five runs' worth (a run here bills about $0.0064 at 200 output tokens a call).
DAY_USD = 0.032


async def closed(handle: WorkflowHandle[Any, Any]) -> RunStatus:
    """The run's final status, whether it completed or failed."""
    with contextlib.suppress(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), 120)
    return await handle.query(STATUS_QUERY, result_type=RunStatus)


def entries_of(h: Harness, prefix: str) -> list[dict[str, Any]]:
    return [e for e in h.sim.entries("llm") if e["key"].startswith(prefix)]


async def test_twenty_topics_at_once_stay_within_the_day(harness: HarnessFactory) -> None:
    agent = f"day-{uuid.uuid4().hex[:8]}"
    overrides = {
        "agent": agent,
        "model": {"maxTokens": 200},
        "budget": {"maxUSDPerRun": DAY_USD, "maxUSDPerDay": DAY_USD, "pauseTimeout": "3s"},
        "worker": {"maxConcurrentActivities": 40},
    }
    async with harness(overrides) as h:
        handles = await asyncio.gather(*(h.start(f"topic {i}") for i in range(TOPICS)))
        ends = await asyncio.gather(*(closed(hd) for hd in handles))

        prefix = ids.workflow_id_prefix(h.config.namespace, agent)
        entries = entries_of(h, prefix)
        billed = billed_usd(h, entries)
        worst = one_call_usd(h, entries)
        phases = [e.phase for e in ends]
        print(f"{TOPICS} topics billed ${billed:.4f} against a ${DAY_USD} day: {phases}")
        assert billed <= DAY_USD + worst, (billed, worst)
        assert phases.count(Phase.COMPLETED) >= 1
        stopped = [e for e in ends if e.phase == Phase.BUDGET_EXHAUSTED]
        assert len(stopped) >= TOPICS // 2
        assert {e.stopped_by for e in stopped} == {"day"}
        assert all("daily budget" in e.message for e in stopped)
        assert h.metric("steadfast_budget_pauses_total", budget="day") >= len(stopped)
        # The operator reads the same day from the ledger (its status, its start gate).
        day_usd = await workflows.day_spent(h.client, h.config)
        assert day_usd is not None
        assert billed * 0.95 <= day_usd <= billed + 1e-9

        # A topic with a new name is not a new day.
        renamed = await h.start("topic 0 renamed")
        after = await closed(renamed)
        assert (after.phase, after.stopped_by) == (Phase.BUDGET_EXHAUSTED, "day")
        # What the day had left paid at most for its query list, never its report.
        assert not [e for e in entries_of(h, renamed.id) if "/ask" not in e["key"]]

        # Nor is a run its Schedule starts on its own, with no operator running.
        await schedules.upsert(h.client, h.config, ["scheduled"], "0 0 1 1 *", paused=False)
        sched = h.client.get_schedule_handle(schedules.topic_schedule_id(h.config, "scheduled"))
        try:
            await sched.trigger()
            wf_prefix = ids.workflow_id(h.config.namespace, agent, "scheduled")
            run_id = await _first_run(h, wf_prefix)
            fired = h.client.get_workflow_handle(run_id)
            after = await closed(fired)
            assert (after.phase, after.stopped_by) == (Phase.BUDGET_EXHAUSTED, "day")
            assert not [e for e in entries_of(h, wf_prefix) if "/ask" not in e["key"]]
        finally:
            await sched.delete()
        everything = entries_of(h, prefix)
        assert billed_usd(h, everything) <= DAY_USD + one_call_usd(h, everything)


async def _first_run(h: Harness, wf_prefix: str) -> str:
    for _ in range(100):
        async for wf in h.client.list_workflows(f"WorkflowId STARTS_WITH '{wf_prefix}'"):
            return wf.id
        await asyncio.sleep(0.2)
    raise AssertionError(f"the Schedule started no run with id {wf_prefix}…")


@pytest.mark.parametrize("settle", [0.5, 3.5], ids=["within-first-heartbeat-window", "later"])
async def test_a_report_attempt_lost_with_its_worker_is_settled_in_the_day(
    harness: HarnessFactory, temporal_address: str, tmp_path: Path, settle: float
) -> None:
    """The lost attempt's reservation does not hold the day's budget for ever: the next
    attempt settles it at what its last heartbeat said was billed.

    The SDK sends an attempt's first heartbeat at once and holds later ones for 0.8
    heartbeat timeouts (2.4 s here). A kill 0.5 s into the stream used to find only
    the heartbeat sent as the attempt started, with no request in it: the
    reservation stayed held all day, and the partial call was never counted."""
    async with harness(start_worker=False) as h:
        run = await h.killed_mid_report(
            f"day settles a lost attempt {settle}",
            temporal_address,
            tmp_path / "worker.json",
            chunk_delay_ms=100,
            settle=settle,
        )
        assert run.result.status.phase == Phase.COMPLETED
        ledger = h.client.get_workflow_handle(h.day_ledger_id())
        async with h.worker():  # a query needs a worker, seen polling
            day = await _query_day(ledger)
        entries = entries_of(h, run.handle.id)
        billed = billed_usd(h, entries)
        print(
            f"day: spent ${day.spent_usd:.5f}, held ${day.reserved_usd:.5f}; billed ${billed:.5f}"
        )
        assert [e["outcome"] for e in entries].count("aborted") == 1
        assert day.reserved_usd == 0  # nothing left on hold
        assert day.requests == len(entries)
        assert 0 < day.spent_usd <= billed + 1e-9


async def _query_day(ledger: WorkflowHandle[Any, Any]) -> LedgerState:
    for _ in range(50):
        with contextlib.suppress(RPCError):
            day: LedgerState = await ledger.query(LEDGER_QUERY, result_type=LedgerState)
            return day
        await asyncio.sleep(0.2)
    raise AssertionError(f"{ledger.id} did not answer")


async def _paused_by_the_day_then_raised(
    h: Harness, handle: WorkflowHandle[Any, Any], step: int
) -> ResearchResult:
    """Wait for ``handle`` to pause at ``step`` on the day, raise the day (``steadfast
    budget --max-usd-per-day``), and return the result it then completes with."""
    paused = await wait_paused(handle)
    assert (paused.step, paused.stopped_by) == (step, "day")
    assert "daily budget" in paused.message
    answer = await set_budget(h.client, handle.id, max_usd_per_day=50.0)
    assert answer.max_usd_per_day == 50.0
    result: ResearchResult = await asyncio.wait_for(handle.result(), 30)
    assert result.status.phase == Phase.COMPLETED
    return result


async def test_a_run_paused_by_the_day_resumes_on_a_raise_of_the_day(
    harness: HarnessFactory,
) -> None:
    """The day's refusal comes from inside the report activity; the run pauses, says
    so, and a raise of its day (``steadfast budget --max-usd-per-day``) lets it finish
    with every call served once."""
    agent = f"raise-{uuid.uuid4().hex[:8]}"
    overrides = {
        "agent": agent,
        "budget": {"maxUSDPerRun": 1.0, "maxUSDPerDay": squeezed_limit(), "pauseTimeout": "1h"},
    }
    async with harness(overrides) as h:
        handle = await h.start("paused by the day")
        await _paused_by_the_day_then_raised(h, handle, step=3)
        served = [n for k, n in h.sim.served("llm").items() if k.startswith(handle.id)]
        assert len(served) >= 2  # the query list and the report
        assert max(served) == 1


async def test_searches_by_the_model_are_granted_from_the_day(harness: HarnessFactory) -> None:
    """``anthropic-web-search`` is a paid request: the day's ledger holds what it cost,
    as it holds the queries' and the report's, so the day is never overspent on them."""
    overrides = {
        "search": {"provider": "anthropic-web-search"},
        "budget": {"maxUSDPerRun": 1.0, "maxUSDPerDay": 5.0},
    }
    async with harness(overrides) as h:
        handle = await h.start("searched within the day")
        st = await closed(handle)
        assert st.phase == Phase.COMPLETED, st.message
        entries = entries_of(h, handle.id)
        fees = sum(
            int(e["billed"].get("server_tool_use", {}).get("web_search_requests", 0))
            for e in entries
            if e["billed"]
        )
        billed = billed_usd(h, entries) + fees * WEB_SEARCH_USD_PER_REQUEST
        ledger = h.client.get_workflow_handle(h.day_ledger_id())
        day = await _query_day(ledger)
        print(f"day: spent ${day.spent_usd:.6f}, billed ${billed:.6f}, {len(entries)} calls")
        assert (len(entries), fees) == (5, 3)  # queries, three searches, the report
        assert day.spent_usd == pytest.approx(billed, rel=1e-9)
        assert day.reserved_usd == 0.0


async def test_a_search_by_the_model_the_day_refuses_pauses_the_run_until_a_raise(
    harness: HarnessFactory,
) -> None:
    """A search through the model is a paid request like an LLM step, and a day that
    cannot grant it pauses the run the same way: before, every search failed and
    the run ended Failed ("daily budget reached") with its queries paid for."""
    agent = f"searches-{uuid.uuid4().hex[:8]}"
    overrides = {
        "agent": agent,
        "search": {"provider": "anthropic-web-search"},
        # Room for the query call's reservation; a search's adds a $0.01 fee.
        "budget": {"maxUSDPerRun": 1.0, "maxUSDPerDay": squeezed_limit(), "pauseTimeout": "1h"},
    }
    async with harness(overrides) as h:
        handle = await h.start("searches paused by the day")
        result = await _paused_by_the_day_then_raised(h, handle, step=2)
        assert result.status.message == "report saved"
        entries = entries_of(h, handle.id)
        served = [n for k, n in h.sim.served("llm").items() if k.startswith(handle.id)]
        # The queries, three searches and the report, each served once.
        assert (len(served), max(served)) == (5, 1)
        fees = sum(
            int(e["billed"].get("server_tool_use", {}).get("web_search_requests", 0))
            for e in entries
            if e["billed"]
        )
        assert fees == 3
        day = await _query_day(h.client.get_workflow_handle(h.day_ledger_id()))
        billed = billed_usd(h, entries) + fees * WEB_SEARCH_USD_PER_REQUEST
        assert day.spent_usd == pytest.approx(billed, rel=1e-9)
        assert day.reserved_usd == 0.0

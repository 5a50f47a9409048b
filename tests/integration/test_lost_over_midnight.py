"""An attempt lost across midnight is charged in every day's ledger it reserved in.

A request reserves its worst case in the ledger of the UTC day it is sent, so the
attempts of one activity can reserve in yesterday's ledger and today's. An attempt
that replaces one lost with its worker used to ask only today's ledger what the lost
one left reserved or settled: a request sent just before midnight and lost with its
worker, with no heartbeat that named it, was counted $0 in the run, and its
reservation held yesterday's budget until that ledger closed.

Here the lost attempt's ledger traffic is sent by the test, as that attempt would
have sent it (its request keys, its reservations, one settle), and the next attempt
runs in the SDK's activity environment against the real dev server, the harness's
worker (which runs the ledgers) and the simulator. Its first schedule is set to a
minute before midnight, as Temporal would report it.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import ActivityEnvironment
from tests.integration.conftest import Harness, HarnessFactory
from tests.integration.test_budget_per_call import billed_usd

from steadfast_contract import activities as act
from steadfast_contract import budget
from steadfast_contract.ledger import (
    LEDGER_QUERY,
    LEDGER_WORKFLOW,
    RESERVE_UPDATE,
    SETTLE_SIGNAL,
    LedgerInput,
    LedgerState,
    ReserveInput,
    ReserveResult,
    SettleInput,
)
from steadfast_worker.activities.heartbeat import Carried

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(120)]

DAY_LIMIT_USD = 50.0


def _key(h: Harness) -> str:
    return budget.ledger_key(h.config.namespace, h.config.agent, h.task_queue)


async def _reserve(h: Harness, day: str, request: str, usd: float) -> None:
    """Reserve ``usd`` for ``request`` in ``day``'s ledger, as an LLM activity does."""
    start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
        LEDGER_WORKFLOW,
        LedgerInput(_key(h), day),
        id=budget.ledger_id(_key(h), day),
        task_queue=h.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        execution_timeout=timedelta(hours=2),
    )
    answer: ReserveResult = await h.client.execute_update_with_start_workflow(
        RESERVE_UPDATE,
        ReserveInput(request, usd, DAY_LIMIT_USD),
        start_workflow_operation=start,
        result_type=ReserveResult,
    )
    assert answer.granted


async def _settle(h: Harness, day: str, request: str, usd: float) -> None:
    handle = h.client.get_workflow_handle(budget.ledger_id(_key(h), day))
    await handle.signal(SETTLE_SIGNAL, SettleInput(request, usd))


async def _day(h: Harness, day: str) -> LedgerState:
    handle = h.client.get_workflow_handle(budget.ledger_id(_key(h), day))
    state: LedgerState = await handle.query(LEDGER_QUERY, result_type=LedgerState)
    return state


async def _second_attempt(
    h: Harness, wf_id: str, topic: str, first_scheduled: datetime, reached: dict[str, Any] | None
) -> act.GenerateQueriesOutput:
    """Attempt 2 of run ``wf_id``'s query call, first scheduled at ``first_scheduled``,
    after attempt 1 was lost (``reached``: the details of its last heartbeat that
    reached Temporal, if one did)."""
    env = ActivityEnvironment(h.client)
    env.info = replace(
        env.info,
        workflow_id=wf_id,
        workflow_run_id="run-1",
        activity_id="1",
        attempt=2,
        heartbeat_details=[reached] if reached else [],
        scheduled_time=first_scheduled,
        heartbeat_timeout=timedelta(seconds=3),
        task_queue=h.task_queue,
    )
    inp = act.GenerateQueriesInput(
        topic, 3, h.config.model.name, budget=act.RunBudget(0.0, 1.0, DAY_LIMIT_USD, _key(h))
    )
    out: act.GenerateQueriesOutput = await env.run(h.activities.generate_queries, inp)
    return out


async def test_an_attempt_lost_across_midnight_is_charged_in_both_days_ledgers(
    harness: HarnessFactory,
) -> None:
    async with harness() as h:  # its worker runs the ledgers
        now = datetime.now(UTC)
        today = budget.day_of(now)
        yesterday = budget.day_of(now - timedelta(days=1))
        wf_id = f"midnight-lost-{uuid.uuid4().hex[:8]}"
        lost = f"{wf_id}/run-1/1/1/"  # run, run id, activity, attempt 1
        # Attempt 1 asked at 23:59:58 (billed and settled: no heartbeat told of it),
        # asked again at 00:00:01 and was lost with its worker mid-request.
        await _reserve(h, yesterday, f"{lost}0", 0.031)
        await _settle(h, yesterday, f"{lost}0", 0.012)
        await _reserve(h, today, f"{lost}1", 0.029)
        before = {day: await _day(h, day) for day in (yesterday, today)}

        minute_before = datetime.fromisoformat(today) - timedelta(minutes=1)
        second = await _second_attempt(h, wf_id, "lost over midnight", minute_before, None)

        # Both requests of the lost attempt are the run's failed spend: the one
        # yesterday's ledger holds settled at what it was settled at, the one today's
        # holds reserved at its reservation. The old code asked only today's ledger
        # and counted $0.029.
        assert second.llm.failed_cost_usd == pytest.approx(0.012 + 0.029, rel=1e-9)
        (asked,) = [e for e in h.sim.entries("llm") if e["key"].startswith(wf_id)]
        assert second.llm.cost_usd == pytest.approx(billed_usd(h, [asked]), rel=1e-9)
        # Neither day holds a reservation of the lost attempt any more, and each
        # counted what it was charged once.
        after = {day: await _day(h, day) for day in (yesterday, today)}
        assert after[yesterday].reserved_usd == pytest.approx(0.0)
        assert after[yesterday].spent_usd == pytest.approx(before[yesterday].spent_usd)
        assert after[today].reserved_usd == pytest.approx(0.0)
        assert after[today].spent_usd - before[today].spent_usd == pytest.approx(
            0.029 + second.llm.cost_usd, rel=1e-9
        )


async def test_a_request_named_in_a_closed_days_ledger_counts_at_the_heartbeats_word(
    harness: HarnessFactory,
) -> None:
    """The ledger a heartbeat named may have closed (an hour after its day) before the
    next attempt: it knows nothing then, and the heartbeat's word is what was billed."""
    async with harness() as h:
        now = datetime.now(UTC)
        closed = budget.ledger_id(_key(h), budget.day_of(now - timedelta(days=2)))
        wf_id = f"closed-day-{uuid.uuid4().hex[:8]}"
        reached = Carried(
            inflight_cost_usd=0.017,
            inflight_input_tokens=900,
            inflight_request=f"{wf_id}/run-1/1/1/0",
            inflight_ledger=closed,
        ).as_details()
        long_ago = now - timedelta(days=2)
        second = await _second_attempt(h, wf_id, "named in a closed day", long_ago, reached)

        assert second.llm.failed_cost_usd == pytest.approx(0.017, rel=1e-9)

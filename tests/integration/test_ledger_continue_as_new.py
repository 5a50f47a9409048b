"""The day's ledger keeps its book across continue-as-new, under concurrent requests.

A ledger continues as new when Temporal suggests it (a busy agent's day is thousands
of reservations), carrying what was spent, what is reserved and which requests were
settled. If any of it were lost at that boundary the day would be overspent, or a
resent settle counted twice. Here the dev server suggests it after 40 events, so
sixty requests reserved and settled six at a time through the activities' own code
(:mod:`steadfast_worker.activities.daybudget`, in an activity context with a real
client) cross several boundaries; the book must come out exact. The ledger runs
outside the workflow sandbox, so its histories -- reservations, settles, a lost
attempt's charge, every continue-as-new -- must also replay on its code.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer, Worker
from tests.support.temporal import start_dev_server

from steadfast_contract import budget
from steadfast_contract.activities import RunBudget
from steadfast_contract.ledger import LEDGER_QUERY, ChargeLostResult, LedgerState
from steadfast_worker import errors
from steadfast_worker.activities import daybudget
from steadfast_worker.ledger import DailyBudgetLedger

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(120)]

REQUESTS = 60
COST_USD = 0.01
DAY_USD = 1.0


@pytest.fixture
async def short_histories() -> AsyncIterator[Client]:
    """A dev server that suggests continue-as-new after 40 history events."""
    env: WorkflowEnvironment = await start_dev_server(
        dynamic_config={"limit.historyCount.suggestContinueAsNew": "40"}
    )
    try:
        yield env.client
    finally:
        await env.shutdown()


async def _day(client: Client, ledger_id: str, spent: float) -> LedgerState:
    """The ledger's book once its settles have been applied (they are signals)."""
    day = LedgerState("")
    for _ in range(200):
        with contextlib.suppress(Exception):
            day = await client.get_workflow_handle(ledger_id).query(
                LEDGER_QUERY, result_type=LedgerState
            )
            if day.spent_usd == pytest.approx(spent) and day.reserved_usd == pytest.approx(0):
                return day
        await asyncio.sleep(0.1)
    return day


async def test_the_day_is_exact_across_continue_as_new(short_histories: Client) -> None:
    client = short_histories
    queue = f"ledger-{uuid.uuid4().hex[:8]}"
    key = f"agent-{uuid.uuid4().hex[:8]}"
    ledger_id = budget.ledger_id(key, budget.day_of(datetime.now(UTC)))
    run = RunBudget(0.0, DAY_USD, DAY_USD, key)
    env = ActivityEnvironment(client)
    env.info = replace(env.info, task_queue=queue)
    gate = asyncio.Semaphore(6)

    async def request(name: str, reserve: float, cost: float) -> None:
        async with gate:
            granted = await env.run(daybudget.reserve_day, run, name, reserve, {})
            assert granted == ledger_id
            await env.run(daybudget.settle_day, granted, name, cost)

    async with Worker(client, task_queue=queue, workflows=[DailyBudgetLedger]):
        await asyncio.gather(
            *(request(f"req-{i}", 2 * COST_USD, COST_USD) for i in range(REQUESTS))
        )
        spent = REQUESTS * COST_USD
        day = await _day(client, ledger_id, spent)
        runs = [w.run_id async for w in client.list_workflows(f"WorkflowId = '{ledger_id}'")]
        print(f"{len(runs)} runs of the ledger; spent ${day.spent_usd:.2f} of ${DAY_USD}")
        assert len(runs) >= 3  # it did continue as new, more than once
        assert (day.spent_usd, day.reserved_usd) == (pytest.approx(spent), pytest.approx(0))
        assert day.requests == REQUESTS

        # A resent settle and a resent reserve of the first request, from before the
        # boundaries, are answered as the first ones were: nothing counted twice.
        await env.run(daybudget.settle_day, ledger_id, "req-0", COST_USD)
        assert await env.run(daybudget.reserve_day, run, "req-0", 2 * COST_USD, {}) == ledger_id
        assert (await _day(client, ledger_id, spent)).spent_usd == pytest.approx(spent)

        # What is left of the day is what the book says: 0.40, not a fresh day.
        left = DAY_USD - spent
        with pytest.raises(ApplicationError) as refused:
            await env.run(daybudget.reserve_day, run, "too-much", left + 0.01, {})
        assert refused.value.type == errors.BUDGET_EXHAUSTED
        assert await env.run(daybudget.reserve_day, run, "fits", left - 0.01, {}) == ledger_id

        # A retry asking after its lost attempts, which reserved nothing here.
        lost = await env.run(daybudget.charge_lost, ledger_id, [f"{ledger_id}/none/"], {})
        assert lost == ChargeLostResult()

        replayer = Replayer(workflows=[DailyBudgetLedger])
        replayed = 0
        async for execution in client.list_workflows(f"WorkflowId = '{ledger_id}'"):
            handle = client.get_workflow_handle(ledger_id, run_id=execution.run_id)
            history = await handle.fetch_history()
            if _has_completed_workflow_task(history):
                await replayer.replay_workflow(history)
                replayed += 1
        # Every run that did anything: all but, at most, a newest one just begun.
        assert replayed >= max(2, len(runs) - 1)


def _has_completed_workflow_task(history: WorkflowHistory) -> bool:
    """Whether ``history`` holds a workflow task's work to replay. The newest run,
    continued-as-new a moment ago, may hold only its start event, and the SDK's
    replayer waits forever on that (uncancellable: it waits in the core's thread)."""
    return any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in history.events)
